"""Deferred sibling cleanup and cleanup_my_worktrees.

A story's worktrees stay while any job of the story in the same repository is QUEUED,
CLAIMED or RUNNING: the next task continues on the story's branch. When the last one ends,
whoever ended it, every remaining worktree of the story in this machine's worktree directory
goes. The branch is kept when the story delivered work (a job DONE and pushed); otherwise it is
deleted only when origin has its tip, so unpushed commits are never lost. A worktree whose
push failed is kept for inspection (only cleanup_my_worktrees removes it, on request).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from handlers import gitops, validate
from handlers.auth import Worker
from handlers.repo_root import RepoRoot
from handlers.workspace import Workspace
from handlers.worktree import repo_root_for
from reactor import metrics
from reactor.db import Database, Row
from reactor.logs import get_logger
from reactor.sqlfiles import query

log = get_logger("reactor.cleanup")

_STORY_JOBS = query("cleanup.story_jobs")
_JOBS_BY_ID = query("cleanup.jobs_by_id")

ACTIVE = frozenset({"QUEUED", "CLAIMED", "RUNNING"})
RESERVED = ("_products", ".cleanup-queue", ".locks")


@dataclass
class CleanupResult:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "removed": self.removed,
            "kept": self.kept,
            "skipped": self.skipped,
            "reasons": self.reasons,
        }


def worktree_entries(ws: Workspace) -> list[str]:
    """Directory names in the worktree dir, minus reserved entries and lock files."""
    try:
        entries = list(os.scandir(ws.worktree_dir))
    except OSError:
        return []
    return sorted(
        entry.name
        for entry in entries
        if entry.is_dir(follow_symlinks=False)
        and entry.name not in RESERVED
        and not entry.name.endswith(".lock")
        and not entry.name.startswith(".")
    )


async def cleanup_story(db: Database, ws: Workspace, story_id: str, *, why: str) -> list[str]:
    """Remove the story's worktrees if no job of it (per repository) is still active."""
    rows = await db.fetch(_STORY_JOBS, story_id)
    buckets: dict[str | None, list[Row]] = {}
    for row in rows:
        buckets.setdefault(row["task_repo_url"], []).append(row)
    removed: list[str] = []
    for jobs in buckets.values():
        active = [row["id"] for row in jobs if row["status"] in ACTIVE]
        local = [row for row in jobs if (ws.worktree_dir / row["id"]).is_dir()]
        if not local:
            continue
        if active:
            log.info(
                "cleanup.deferred",
                story_id=story_id,
                active_jobs=active,
                why="siblings still active",
            )
            continue
        removed += await _remove_bucket(db, ws, story_id, jobs, local, why=why)
    return removed


async def _remove_bucket(
    db: Database, ws: Workspace, story_id: str, jobs: list[Row], local: list[Row], *, why: str
) -> list[str]:
    first = jobs[0]
    root = await repo_root_for(
        ws, first["product_id"], first["product_repo_url"], first["task_repo_url"]
    )
    if root.path is None:
        log.warning("cleanup.no_repo_root", story_id=story_id, why=root.hint)
        return []
    delivered = any(row["status"] == "DONE" and row["pushed_at"] is not None for row in jobs)
    removed = []
    for row in local:
        if row["id"] in ws.in_use:
            log.info("cleanup.in_use", job_id=row["id"], why="an agent is still working in it")
            continue
        if (row["error"] or "").startswith("push failed"):
            log.info("cleanup.kept", job_id=row["id"], why="its push failed; kept for inspection")
            continue
        if await _remove(ws, root, row["id"], keep_branch=delivered, why=why):
            removed.append(row["id"])
    return removed


async def _remove(
    ws: Workspace, root: RepoRoot, job_id: str, *, keep_branch: bool, why: str
) -> bool:
    assert root.path is not None
    try:
        result = await ws.git.run(
            gitops.remove_worktree,
            root.path,
            ws.path_for(job_id),
            keep_branch=keep_branch,
            worktree_dir=ws.worktree_dir,
            repo=root.path,
        )
    except (gitops.GitError, validate.InvalidInput, OSError) as exc:
        metrics.WORKTREES.labels("remove", "failed").inc()
        log.warning("cleanup.remove_failed", job_id=job_id, why=str(exc))
        return False
    if not result.removed:
        return False  # already gone (another pass, or by hand): nothing to report
    metrics.WORKTREES.labels("remove", "ok").inc()
    log.info(
        "cleanup.removed",
        job_id=job_id,
        branch=result.branch,
        branch_deleted=result.branch_deleted,
        branch_note=result.detail,
        why=why,
    )
    return True


async def catch_up(db: Database, ws: Workspace) -> list[str]:
    """Find stories whose cleanup was missed (reactor down, notification lost) and run it."""
    names = [name for name in worktree_entries(ws) if _is_job_id(name)]
    if not names:
        return []
    stories = {row["story_id"] for row in await db.fetch(_JOBS_BY_ID, names) if row["story_id"]}
    removed = []
    for story_id in sorted(stories):
        removed += await cleanup_story(db, ws, story_id, why="catch-up: missed while away")
    return removed


async def cleanup_my_worktrees(db: Database, ws: Workspace, worker: Worker) -> CleanupResult:
    """Scan the worktree dir: remove terminal jobs' worktrees, keep active ones, skip the rest."""
    worker.require_write()
    result = CleanupResult()
    names = worktree_entries(ws)
    if not names:
        return result
    valid = [name for name in names if _is_job_id(name)]
    rows = {row["id"]: row for row in await db.fetch(_JOBS_BY_ID, valid)} if valid else {}
    for name in names:
        row = rows.get(name)
        if row is None or row["user_id"] != worker.user_id:
            result.skipped.append(name)
            result.reasons[name] = "no job of yours has this id"
        elif row["status"] in ACTIVE:
            result.kept.append(name)
        else:
            await _clean_one(ws, row, result)
    return result


async def _clean_one(ws: Workspace, row: Row, result: CleanupResult) -> None:
    job_id = row["id"]
    root = await repo_root_for(ws, row["product_id"], row["product_repo_url"], row["task_repo_url"])
    if root.path is None:
        result.skipped.append(job_id)
        result.reasons[job_id] = root.hint or "no repo root"
        return
    keep = row["status"] == "DONE" and row["branch"] is not None
    if await _remove(ws, root, job_id, keep_branch=keep, why="cleanup_my_worktrees"):
        result.removed.append(job_id)
    else:
        result.skipped.append(job_id)
        result.reasons[job_id] = "removal failed (see the reactor log)"


def _is_job_id(name: str) -> bool:
    try:
        validate.job_id(name)
    except validate.InvalidInput:
        return False
    return True
