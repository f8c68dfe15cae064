"""What happens around a claim: preparing the job, and cleaning up after its story.

Shared by the MCP tools and the daemon's agent slots, so both surfaces prepare jobs and
clean up worktrees the same way.
"""

from __future__ import annotations

from typing import Any

import trio

from handlers.auth import Worker
from handlers.claim import ClaimedJob
from handlers.cleanup import catch_up, cleanup_story
from handlers.context import build_context, context_row
from handlers.workspace import Workspace
from handlers.worktree import WorktreeUnavailable, attach_worktree
from reactor.db import Database, DatabaseError
from reactor.events import JobStatusChanged
from reactor.logs import get_logger
from reactor.runtime import TERMINAL, Reactor
from reactor.sqlfiles import query

log = get_logger("reactor.jobflow")

_STORY_OF_JOB = query("cleanup.story_of_job")
_STORY_BRANCH = query("jobs.story_branch")


async def prepare_job(
    reactor: Reactor, ws: Workspace, worker: Worker, job: ClaimedJob
) -> dict[str, Any]:
    """The job's context, with its worktree made ready when the kind needs one.

    ``worker`` is who claimed it (the daemon, or an MCP-over-HTTP caller with its own token
    and instance). Raises WorktreeUnavailable after giving the claim back; the job then cools
    down in that caller's pump so it is not claimed again in a hot loop.
    """
    pump = reactor.pump_for(worker)
    row = await context_row(reactor.db, job.id)  # read once: context and worktree lookup
    assert row is not None, "a job we hold a claim on cannot vanish"
    try:
        ready = await attach_worktree(reactor.db, ws, worker, job.id, job=row)
    except WorktreeUnavailable as exc:
        delay = pump.cool_down(job.id, transient=exc.transient)
        log.warning("job.prepare_failed", job_id=job.id, retry_in_s=round(delay), why=str(exc))
        raise
    pump.forgive(job.id)
    context = build_context(row)
    if ready is not None:
        context.update(
            worktree_path=str(ready.path),
            branch_name=ready.branch,
            reused_branch=ready.reused_branch,
            base_sha=ready.base_sha,
        )
    return context


async def launched_context(
    db: Database, ws: Workspace, worker: Worker, job_id: str
) -> dict[str, Any] | None:
    """The context of a job this worker already holds (the daemon claimed and prepared it),
    or None when it no longer holds it."""
    row = await context_row(db, job_id)
    if row is None or row["status"] not in ("CLAIMED", "RUNNING"):
        return None
    if (row["claimed_by_token_id"], row["worker_instance_id"]) != (
        worker.token_id,
        worker.instance_id,
    ):
        return None
    context = build_context(row)
    path = ws.path_for(job_id) if ws.enabled else None
    if path is not None and row["branch"] is not None and path.is_dir():
        first = await db.fetchrow(_STORY_BRANCH, row["story_id"]) if row["story_id"] else None
        context.update(
            worktree_path=str(path),
            branch_name=row["branch"],
            reused_branch=first is not None and first["id"] != job_id,
            base_sha=row["base_sha"],
        )
    return context


class CleanupService:
    """Runs deferred cleanup when a story's last active job ends, and catches up after gaps."""

    def __init__(self, reactor: Reactor, ws: Workspace) -> None:
        self._reactor = reactor
        self._ws = ws
        self._pending: set[str] = set()
        self._again: set[str] = set()
        self._periodic = 0
        reactor.status_hooks.append(self.on_status_changed)
        reactor.sweep_hooks.append(self.on_sweep)

    async def on_status_changed(self, event: JobStatusChanged) -> None:
        if (
            event.new_status not in TERMINAL
            or event.kind != "TASK_IMPLEMENTATION"
            or not event.task_id
        ):
            return
        story_id = await self._reactor.db.fetchval(_STORY_OF_JOB, event.job_id)
        if story_id is not None:
            self.schedule(story_id, why=f"job {event.job_id} became {event.new_status}")

    async def after_release(self, job_id: str) -> None:
        """An agent left this job's worktree: clean up now if its story has finished."""
        story_id = await self._reactor.db.fetchval(_STORY_OF_JOB, job_id)
        if story_id is not None:
            self.schedule(story_id, why=f"the agent of job {job_id} exited")

    def schedule(self, story_id: str, *, why: str) -> None:
        """Clean the story up soon; one pass per story at a time, re-run if asked meanwhile."""
        if story_id in self._pending:
            self._again.add(story_id)
            return
        self._pending.add(story_id)
        self._reactor.nursery.start_soon(self._clean_later, story_id, why)

    async def _clean_later(self, story_id: str, why: str) -> None:
        try:
            while True:
                # A short grace: an MCP agent's PostToolUse hook may still run inside the
                # worktree right after it reported its result (scrum4me-mcp removed worktrees
                # inline and broke that hook).
                await trio.sleep(self._ws.cleanup_grace_seconds)
                self._again.discard(story_id)
                try:
                    await cleanup_story(self._reactor.db, self._ws, story_id, why=why)
                except DatabaseError as exc:
                    log.warning("cleanup.failed", story_id=story_id, why=str(exc))
                if story_id not in self._again:
                    return
        finally:
            self._pending.discard(story_id)

    async def on_sweep(self, reason: str) -> None:
        if reason == "periodic":
            self._periodic += 1
            if self._periodic % 10:
                return  # every tenth periodic sweep; start/reconnect sweeps always catch up
        await catch_up(self._reactor.db, self._ws)
