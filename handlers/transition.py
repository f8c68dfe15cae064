"""update_job_status: a worker reports running, done, failed or skipped.

done pushes the story branch first (``git push -u origin <branch>``) unless the worktree has
no commits beyond its base; a failed push stores FAILED with the reason and keeps the
worktree for inspection. The task follows the job; the story becomes DONE when all its tasks
are, FAILED as soon as one fails. Worktrees are not removed here: deferred cleanup runs when
the story's last active job ends (handlers/cleanup.py), woken by job_status_changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from handlers import gitops, validate
from handlers.auth import Worker
from handlers.errors import Conflict, ValidationError
from handlers.guards import check_owner, load_owned
from handlers.workspace import Workspace
from reactor import metrics
from reactor.db import Database, Row
from reactor.logs import get_logger
from reactor.sqlfiles import query

log = get_logger("reactor.transition")

_OWNERSHIP = query("jobs.ownership")
_MARK_RUNNING = query("transitions.mark_running")
_FINISH = query("transitions.finish")

Status = Literal["running", "done", "failed", "skipped"]
SUMMARY_MAX = 4000
ERROR_MAX = 2000
SKIP_ERROR_MIN = 10


@dataclass(frozen=True)
class StatusReport:
    """What a worker reports; mirrors the update_job_status tool input."""

    job_id: str
    status: Status
    branch: str | None = None
    summary: str | None = None
    error: str | None = None
    model_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    actual_thinking_tokens: int | None = None


def validate_report(report: StatusReport) -> None:
    """Reject bad input before anything is read or written (limits as in scrum4me-mcp)."""
    problems: list[str] = []
    if report.status not in ("running", "done", "failed", "skipped"):
        problems.append("status: must be one of running, done, failed, skipped")
    if report.summary is not None and len(report.summary) > SUMMARY_MAX:
        problems.append(f"summary: at most {SUMMARY_MAX} characters (got {len(report.summary)})")
    if report.error is not None and len(report.error) > ERROR_MAX:
        problems.append(f"error: at most {ERROR_MAX} characters (got {len(report.error)})")
    if report.status == "skipped" and len((report.error or "").strip()) < SKIP_ERROR_MIN:
        problems.append(
            f"error: skipped needs an error of at least {SKIP_ERROR_MIN} characters saying why"
        )
    if report.model_id is not None and len(report.model_id) > 200:
        problems.append("model_id: at most 200 characters")
    for name in (
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "actual_thinking_tokens",
    ):
        value = getattr(report, name)
        if value is not None and not 0 <= value <= 2**31 - 1:
            problems.append(f"{name}: must be a whole number from 0 to 2147483647")
    for name, check in (("job_id", validate.job_id), ("branch", validate.branch_name)):
        value = getattr(report, name)
        if value is not None:
            try:
                check(value)
            except validate.InvalidInput as exc:
                problems.append(f"{name}: {exc}")
    if problems:
        raise ValidationError("; ".join(problems))


async def update_job_status(
    db: Database, ws: Workspace, worker: Worker, report: StatusReport, *, kinds: Sequence[str]
) -> dict[str, Any]:
    worker.require_write()
    validate_report(report)
    if report.status == "running":
        return await _report_running(db, worker, report)
    stored, why = _as_reported(report)
    if report.status == "done" and ws.enabled and ws.path_for(report.job_id).is_dir():
        # Guards before touching git; the write after the push is fenced again.
        stored, why = await _push(ws, await load_owned(db, worker, report.job_id), report)
    # One statement (one round trip): the fenced write, task and story, next_action.
    finished = await db.fetchrow(
        _FINISH,
        report.job_id,
        worker.token_id,
        worker.instance_id,
        stored.status,
        report.summary,
        stored.error,
        stored.branch,
        stored.pushed,
        stored.head_sha,
        report.model_id,
        report.input_tokens,
        report.output_tokens,
        report.cache_read_tokens,
        report.cache_write_tokens,
        report.actual_thinking_tokens,
        list(kinds),
    )
    if finished is None:
        await _explain_lost(db, worker, report)
    assert finished is not None
    more_work = bool(finished["more_work"])
    metrics.TRANSITIONS.labels(finished["status"].lower()).inc()
    log.info(
        "transition.finished",
        job_id=report.job_id,
        reported=report.status,
        stored=finished["status"],
        branch=finished["branch"],
        pushed=finished["pushed_at"] is not None,
        why=why,
    )
    return _output(report.job_id, finished, "wait_for_job_again" if more_work else "queue_empty")


async def _report_running(db: Database, worker: Worker, report: StatusReport) -> dict[str, Any]:
    updated = await db.fetchrow(_MARK_RUNNING, report.job_id, worker.token_id, worker.instance_id)
    if updated is None:
        await _explain_lost(db, worker, report)
    metrics.TRANSITIONS.labels("running").inc()
    log.info("transition.running", job_id=report.job_id, instance_id=worker.instance_id)
    return _output(report.job_id, updated, "idle")


@dataclass(frozen=True)
class _Stored:
    status: str
    error: str | None
    branch: str | None
    pushed: bool
    head_sha: str | None


_Outcome = tuple[_Stored, str]  # what to store, and why (for the log)


def _as_reported(report: StatusReport) -> _Outcome:
    """A terminal report that needs no push: stored as the worker said."""
    status = {"done": "DONE", "failed": "FAILED", "skipped": "SKIPPED"}[report.status]
    why = "no worktree to push" if report.status == "done" else f"worker reported {report.status}"
    return _Stored(status, report.error, report.branch, False, None), why


async def _push(ws: Workspace, row: Row, report: StatusReport) -> _Outcome:
    """done with a worktree: push the branch first, and store what the push allows."""
    if row["kind"] != "TASK_IMPLEMENTATION":
        return _as_reported(report)
    branch = validate.branch_name(report.branch or row["branch"] or f"feat/job-{row['id'][-8:]}")
    result = await ws.git.run(gitops.push_branch, ws.path_for(row["id"]), branch, row["base_sha"])
    metrics.WORKTREES.labels("push", result.outcome).inc()
    if result.outcome == "pushed":
        return _Stored("DONE", report.error, branch, True, result.head_sha), f"pushed {branch}"
    if result.outcome == "no-changes":
        return _Stored("DONE", report.error, None, False, None), "HEAD equals the base: no push"
    error = f"push failed ({result.reason}): {result.detail[:200]}"
    return _Stored("FAILED", error, None, False, None), "push failed; worktree kept for inspection"


def _check_skip(row: Row) -> None:
    if row["kind"] != "TASK_IMPLEMENTATION":
        raise ValidationError(
            f"status: skipped is only allowed for TASK_IMPLEMENTATION jobs (this is {row['kind']})"
        )


async def _explain_lost(db: Database, worker: Worker, report: StatusReport) -> None:
    """The fenced write matched nothing: say why, in the words agents know (cancelled, not
    yours, already finished, ...), or that the job changed meanwhile."""
    row = await db.fetchrow(_OWNERSHIP, report.job_id)
    check_owner(row, worker, report.job_id)
    assert row is not None
    if report.status == "skipped":
        _check_skip(row)
    raise Conflict(
        f"Job {report.job_id} changed while this report was being stored; report it again."
    )


def _output(job_id: str, row: Row | None, next_action: str) -> dict[str, Any]:
    assert row is not None
    return {
        "job_id": job_id,
        "status": row["status"].lower(),
        "branch": row["branch"],
        "pushed_at": _iso(row["pushed_at"]),
        "pr_url": row["pr_url"],
        "verify_result": row["verify_result"].lower() if row["verify_result"] else None,
        "summary": row["summary"],
        "error": row["error"],
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "next_action": next_action,
    }


def _iso(value: Any) -> str | None:
    return None if value is None else f"{value.isoformat()}Z"
