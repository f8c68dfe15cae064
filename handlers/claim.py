"""Claim, lease and rescue: the core of wait_for_job, as single fenced statements.

A claim is one statement (sql/queries/jobs.sql ``claim``): the oldest eligible QUEUED job is
locked with ``FOR UPDATE SKIP LOCKED``, marked CLAIMED for this token and instance with a
lease, and its sprint run started, atomically. Rescue requeues (or, after the retries, fails)
jobs whose lease expired; every later write by the old holder is fenced out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from handlers.auth import Worker
from handlers.presence import CAPABILITIES
from reactor import metrics
from reactor.db import Database, Row
from reactor.logs import get_logger
from reactor.sqlfiles import query

log = get_logger("reactor.claim")

_CLAIM = query("jobs.claim")
_RESCUE = query("jobs.rescue_expired")
_ROLLBACK = query("jobs.rollback_claim")
_RENEW = query("jobs.heartbeat_many")
_HELD = query("jobs.held_by_instance")


@dataclass(frozen=True)
class ClaimedJob:
    id: str
    user_id: str
    product_id: str
    task_id: str | None
    kind: str
    sprint_run_id: str | None
    claimed_at: datetime
    lease_until: datetime
    retry_count: int
    waited_seconds: float
    started_sprint_run: bool = False


@dataclass(frozen=True)
class Rescued:
    job_id: str
    outcome: str  # "QUEUED" (requeued) or "FAILED" (retries used up)
    retry_count: int


@dataclass(frozen=True)
class RescueReport:
    rescued: list[Rescued]
    next_expiry_in: float | None


async def claim_job(
    db: Database,
    worker: Worker,
    *,
    kinds: Sequence[str],
    product_id: str | None,
    lease_seconds: int,
    consumer: str,
) -> ClaimedJob | None:
    """Claim the next eligible job for this worker, or None when there is none."""
    jobs = await claim_jobs(
        db,
        worker,
        kinds=kinds,
        product_id=product_id,
        lease_seconds=lease_seconds,
        consumer=consumer,
        limit=1,
    )
    return jobs[0] if jobs else None


async def claim_jobs(
    db: Database,
    worker: Worker,
    *,
    kinds: Sequence[str],
    product_id: str | None,
    lease_seconds: int,
    consumer: str,
    limit: int,
    excluded: Sequence[str] = (),
    announce: bool = True,
) -> list[ClaimedJob]:
    """Claim up to ``limit`` eligible jobs in one statement, oldest first.

    ``announce=False`` leaves the log line and metrics of each claim to the caller
    (``announce_claim``), which hands the jobs out first: formatting them is not worth a
    consumer's wait."""
    rows = await db.fetch(
        _CLAIM,
        worker.user_id,
        worker.token_id,
        worker.instance_id,
        product_id,
        list(kinds),
        lease_seconds,
        limit,
        list(excluded),
        list(CAPABILITIES),
    )
    metrics.CLAIM_ATTEMPTS.labels("claimed" if rows else "empty").inc()
    jobs = [_claimed(row) for row in rows]
    if announce:
        for job in jobs:
            announce_claim(job, worker, consumer)
    return jobs


def _claimed(row: Row) -> ClaimedJob:
    return ClaimedJob(
        row["id"],
        row["user_id"],
        row["product_id"],
        row["task_id"],
        row["kind"],
        row["sprint_run_id"],
        row["claimed_at"],
        row["lease_until"],
        row["retry_count"],
        row["waited_seconds"],
        bool(row["started_sprint_run"]),
    )


def announce_claim(job: ClaimedJob, worker: Worker, consumer: str) -> None:
    """The metrics and the log line of one claim."""
    metrics.CLAIMS.labels(consumer).inc()
    metrics.PICKUP_LATENCY.observe(max(job.waited_seconds, 0.0))
    log.info(
        "claim.claimed",
        job_id=job.id,
        kind=job.kind,
        product_id=job.product_id,
        consumer=consumer,
        instance_id=worker.instance_id,
        waited_ms=round(job.waited_seconds * 1000, 1),
        retry_count=job.retry_count,
        started_sprint_run=job.started_sprint_run,
        why="oldest eligible QUEUED job (story order, sprint barrier and product filter applied)",
    )


async def rescue_expired(
    db: Database, user_id: str, *, kinds: Sequence[str], max_retries: int
) -> RescueReport:
    """Requeue or fail this user's jobs whose lease expired."""
    row = await db.fetchrow(_RESCUE, user_id, list(kinds), max_retries)
    assert row is not None
    rescued = [
        Rescued(str(item["job_id"]), str(item["outcome"]), int(str(item["retry_count"])))
        for item in _json_list(row["rescued"])
    ]
    for item in rescued:
        metrics.RESCUES.labels("requeued" if item.outcome == "QUEUED" else "failed").inc()
        log.warning(
            "rescue.lease_expired",
            job_id=item.job_id,
            outcome=item.outcome.lower(),
            retry_count=item.retry_count,
            why=(
                "lease expired without a heartbeat; requeued for another attempt"
                if item.outcome == "QUEUED"
                else f"lease expired and {max_retries} retries are used up; marked failed"
            ),
        )
    return RescueReport(rescued, row["next_expiry_in"])


async def rollback_claim(db: Database, worker: Worker, job_id: str, *, reason: str) -> bool:
    """Give a claim back (QUEUED, retry_count unchanged); False if we no longer held it."""
    row = await db.fetchrow(_ROLLBACK, job_id, worker.token_id, worker.instance_id)
    if row is not None:
        metrics.ROLLBACKS.labels(reason).inc()
        log.info("claim.rolled_back", job_id=job_id, why=reason)
    return row is not None


async def renew_leases(
    db: Database, worker: Worker, job_ids: Sequence[str], lease_seconds: int
) -> set[str]:
    """Extend the leases of jobs this instance holds; returns the ids still held."""
    if not job_ids:
        return set()
    rows = await db.fetch(_RENEW, list(job_ids), worker.token_id, worker.instance_id, lease_seconds)
    return {row["id"] for row in rows}


async def held_jobs(db: Database, worker: Worker) -> list[str]:
    return [row["id"] for row in await db.fetch(_HELD, worker.token_id, worker.instance_id)]


def _json_list(value: object) -> list[dict[str, object]]:
    if isinstance(value, str):
        value = json.loads(value)
    return list(value) if isinstance(value, list) else []
