"""job_heartbeat: extend a lease, only for the owning token and instance."""

from __future__ import annotations

from typing import Any

from handlers import validate
from handlers.auth import Worker
from handlers.errors import NotFound, ValidationError
from handlers.guards import check_owner
from reactor.db import Database
from reactor.sqlfiles import query

_HEARTBEAT = query("jobs.heartbeat")
_OWNERSHIP = query("jobs.ownership")


async def job_heartbeat(
    db: Database, worker: Worker, job_id: str, *, lease_seconds: int
) -> dict[str, Any]:
    worker.require_write()
    try:
        validate.job_id(job_id)
    except validate.InvalidInput as exc:
        raise ValidationError(f"job_id: {exc}") from None
    row = await db.fetchrow(_HEARTBEAT, job_id, worker.token_id, worker.instance_id, lease_seconds)
    if row is None:
        check_owner(await db.fetchrow(_OWNERSHIP, job_id), worker, job_id)
        raise NotFound(f"Job {job_id} not found, not claimed by your token, or in terminal state")
    sprint = row["kind"] == "SPRINT_IMPLEMENTATION"
    return {
        "ok": True,
        "job_id": row["id"],
        "lease_until": f"{row['lease_until'].isoformat()}Z",
        "sprint_run_status": row["sprint_run_status"] if sprint else None,
        "sprint_run_pause_reason": row["sprint_run_pause_reason"] if sprint else None,
    }
