"""Prometheus metrics for /metrics. Labels never carry ids, tokens or DSNs."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

PICKUP_LATENCY = Histogram(
    "reactor_pickup_latency_seconds",
    "Time from a job's enqueue (its created_at, set in the enqueue transaction) to its claim.",
    buckets=(
        0.001,
        0.002,
        0.004,
        0.008,
        0.016,
        0.032,
        0.064,
        0.128,
        0.25,
        0.5,
        1,
        2,
        5,
        10,
        30,
        60,
        300,
    ),
    registry=REGISTRY,
)
CLAIMS = Counter(
    "reactor_claims_total", "Jobs claimed by this process.", ["consumer"], registry=REGISTRY
)
CLAIM_ATTEMPTS = Counter(
    "reactor_claim_attempts_total",
    "Claim statements run, by outcome (claimed or empty).",
    ["outcome"],
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "reactor_transitions_total",
    "Job status transitions made by this process.",
    ["status"],
    registry=REGISTRY,
)
RESCUES = Counter(
    "reactor_rescues_total",
    "Jobs whose lease expired, by outcome (requeued or failed).",
    ["outcome"],
    registry=REGISTRY,
)
ROLLBACKS = Counter(
    "reactor_claim_rollbacks_total",
    "Claims given back to the queue.",
    ["reason"],
    registry=REGISTRY,
)
LISTENER_RECONNECTS = Counter(
    "reactor_listener_reconnects_total", "Times the LISTEN session was rebuilt.", registry=REGISTRY
)
LISTENER_UP = Gauge(
    "reactor_listener_up", "1 while the LISTEN session is verified healthy.", registry=REGISTRY
)
NOTIFICATIONS = Counter(
    "reactor_notifications_total", "Notifications received.", ["channel"], registry=REGISTRY
)
NOTIFICATIONS_DROPPED = Counter(
    "reactor_notifications_dropped_total",
    "Notifications dropped (malformed payload, or the inbox was full).",
    ["reason"],
    registry=REGISTRY,
)
SWEEPS = Counter(
    "reactor_sweeps_total", "Safety and catch-up sweeps.", ["reason"], registry=REGISTRY
)
QUEUE_DEPTH = Gauge(
    "reactor_queue_depth", "QUEUED jobs of this worker's user and kinds.", registry=REGISTRY
)
NOTIFY_QUEUE_USAGE = Gauge(
    "reactor_notification_queue_usage",
    "pg_notification_queue_usage(): fraction of the server's NOTIFY queue in use.",
    registry=REGISTRY,
)
JOBS_IN_FLIGHT = Gauge(
    "reactor_jobs_in_flight", "Jobs this process holds (claimed or running).", registry=REGISTRY
)
WORKTREES = Counter(
    "reactor_worktree_operations_total",
    "Worktree operations, by kind and outcome.",
    ["operation", "outcome"],
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
