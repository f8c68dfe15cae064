"""Why a worker may not write to a job, in the words scrum4me-mcp's agents know.

Order as in scrum4me-mcp: the job must exist, be claimed by the caller's token, not be
cancelled, and still be active. Fencing adds one rule on top: the active claim must be this
worker instance's, so a worker whose lease expired and whose job was claimed again (by another
instance of the same token) is refused instead of overwriting the new holder's work.
"""

from __future__ import annotations

from handlers.auth import Worker
from handlers.errors import Conflict, JobCancelled, NotFound, PermissionDenied
from reactor.db import Database, Row
from reactor.sqlfiles import query

_OWNERSHIP = query("jobs.ownership")

ACTIVE = ("CLAIMED", "RUNNING")


async def load_owned(db: Database, worker: Worker, job_id: str) -> Row:
    """The job row, if this worker may write to it; otherwise the matching refusal."""
    row = await db.fetchrow(_OWNERSHIP, job_id)
    check_owner(row, worker, job_id)
    assert row is not None
    return row


def check_owner(row: Row | None, worker: Worker, job_id: str) -> None:
    if row is None:
        raise NotFound(f"Job {job_id} not found")
    if row["claimed_by_token_id"] != worker.token_id:
        if (
            row["status"] == "QUEUED"
            and row["claimed_by_token_id"] is None
            and row["retry_count"] > 0
        ):
            raise PermissionDenied(
                "This job was not claimed by your token: its lease expired and it went back to "
                "the queue. Discard your local changes and call wait_for_job."
            )
        raise PermissionDenied("This job was not claimed by your token")
    if row["status"] == "CANCELLED":
        raise JobCancelled(
            "This job was cancelled (in the Scrum4Me UI or by a PBI fail-cascade). Discard your "
            "local changes and call wait_for_job for the next item."
        )
    if row["status"] not in ACTIVE:
        raise Conflict(f"Job is already in terminal state: {row['status'].lower()}")
    if row["worker_instance_id"] != worker.instance_id:
        raise PermissionDenied(
            f"This job is held by another worker instance ({row['worker_instance_id']}), not by "
            f"you ({worker.instance_id}): your lease expired and the job was claimed again. "
            "Discard your local changes and call wait_for_job. (If one agent uses several MCP "
            "processes, give them the same SCRUM4ME_INSTANCE_ID.)"
        )
