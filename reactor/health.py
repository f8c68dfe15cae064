"""The /health answer: the agent-runner's JSON shape, plus what a reactor knows.

``status`` is running (jobs in flight), idle, unhealthy (database unreachable, or the listener
not verified for longer than REACTOR_LISTENER_DOWN_UNHEALTHY_SECONDS) or token-expired. HTTP
200 for running/idle, 503 otherwise. No secret ever appears: no token, no DSN.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import trio

from handlers.presence import live_workers
from reactor import __version__, metrics
from reactor.db import DatabaseError
from reactor.runtime import Reactor
from reactor.sqlfiles import query

_SNAPSHOT = query("health.snapshot")


@dataclass
class AgentStats:
    """Kept by the daemon's agent slots, reported like the agent-runner's batches."""

    last_batch_at: float | None = None
    last_batch_exit: int | None = None
    consecutive_failures: int = 0
    running: int = 0

    def record(self, exit_code: int) -> None:
        self.last_batch_at = time.time()
        self.last_batch_exit = exit_code
        self.consecutive_failures = 0 if exit_code == 0 else self.consecutive_failures + 1


async def health_report(reactor: Reactor, agents: AgentStats) -> tuple[int, dict[str, Any]]:
    worker = reactor.worker
    db_ok = True
    snapshot: dict[str, Any] = {}
    workers: list[dict[str, object]] = []
    with trio.move_on_after(3) as scope:
        try:
            row = await reactor.db.fetchrow(
                _SNAPSHOT,
                worker.user_id,
                list(reactor.settings.kinds),
                worker.token_id,
                worker.instance_id,
            )
            snapshot = dict(row) if row else {}
            workers = await live_workers(reactor.db, worker.user_id)
            for entry in workers:
                heard = reactor.state.live_workers.get(str(entry["instance_id"]))
                entry["connectedAt"] = _iso(heard.seen_at) if heard else None
        except DatabaseError:
            db_ok = False
    if scope.cancelled_caught:
        db_ok = False
    if snapshot:
        metrics.QUEUE_DEPTH.set(snapshot["queue_depth"])
        metrics.NOTIFY_QUEUE_USAGE.set(snapshot["notify_queue_usage"])
        metrics.JOBS_IN_FLIGHT.set(snapshot["in_flight"])
    listener = reactor.listener.status
    listener_down = listener.unhealthy_for >= reactor.settings.listener_down_unhealthy_seconds
    in_flight = int(snapshot.get("in_flight", 0)) + agents.running
    if not reactor.state.token_valid:
        status = "token-expired"
    elif not db_ok or listener_down:
        status = "unhealthy"
    else:
        status = "running" if in_flight else "idle"
    body = {
        "status": status,
        "lastBatchAt": _iso(agents.last_batch_at),
        "lastBatchExit": agents.last_batch_exit,
        "consecutiveFailures": agents.consecutive_failures,
        "tokenStatus": {
            "scrum4me": "ok" if reactor.state.token_valid else "expired",
            "db": "ok" if db_ok else "unreachable",
        },
        "listener": {
            "state": str(listener.state),
            "reconnects": listener.reconnects,
            "lastNotificationAt": _iso(listener.last_notification_at),
            "unhealthyForSeconds": round(listener.unhealthy_for, 1),
            "lastError": listener.last_error,
        },
        "workers": workers,
        "lastSweepAt": _iso(reactor.state.last_sweep_at),
        "queueDepth": snapshot.get("queue_depth"),
        "jobsInFlight": in_flight,
        "instanceId": worker.instance_id,
        "kinds": list(reactor.settings.kinds),
        "version": __version__,
    }
    return (200 if status in ("running", "idle") else 503), body


def _iso(value: float | None) -> str | None:
    if value is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
