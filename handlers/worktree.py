"""Make a claimed TASK_IMPLEMENTATION job workable: repo root, story branch, worktree.

Branch per story: the job continues the branch of the story's oldest job that has one (its
own, for a retry), else ``feat/story-<last 8 of the story id>``. Any failure gives the claim
back (QUEUED, retry count unchanged, half-made worktree removed) and explains what to
configure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from handlers import gitops, validate
from handlers.auth import Worker
from handlers.claim import rollback_claim
from handlers.errors import HandlerError
from handlers.repo_root import RepoRoot, resolve_repo_root
from handlers.workspace import Workspace
from reactor import metrics
from reactor.db import Database, Row
from reactor.logs import get_logger
from reactor.sqlfiles import query

log = get_logger("reactor.worktree")

_OWNERSHIP = query("jobs.ownership")
_STORY_BRANCH = query("jobs.story_branch")
_ACTIVE_SIBLINGS = query("jobs.active_story_jobs")
_SET_WORKTREE = query("jobs.set_worktree")


class WorktreeUnavailable(HandlerError):
    """The job could not be prepared; the claim was given back. ``transient`` says whether
    trying again soon might work (a git hiccup) or needs an operator (no repo root)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class WorktreeReady:
    path: Path
    branch: str
    reused_branch: bool
    base_sha: str
    base_ref: str
    repo_root: Path


async def repo_root_for(
    ws: Workspace, product_id: str, product_repo: str | None, task_repo: str | None
) -> RepoRoot:
    return await ws.git.run(resolve_repo_root, ws.repo_roots, product_id, product_repo, task_repo)


async def attach_worktree(
    db: Database, ws: Workspace, worker: Worker, job_id: str, *, job: Row | None = None
) -> WorktreeReady | None:
    """Create the job's worktree; None when the job needs none (other kinds, worktrees off).

    ``job`` is the job's row if the caller already read it (the context query has every
    column used here); otherwise it is read.
    """
    if not ws.enabled:
        return None
    row = job if job is not None else await db.fetchrow(_OWNERSHIP, job_id)
    if row is None or row["kind"] != "TASK_IMPLEMENTATION":
        return None
    root = await repo_root_for(ws, row["product_id"], row["product_repo_url"], row["task_repo_url"])
    if root.path is None:
        await _give_back(db, worker, job_id, "no repo root")
        raise WorktreeUnavailable(root.hint or "No repo root configured", transient=False)
    try:
        await _clear_earlier_attempt(ws, root.path, job_id)
        branch, reused = await _story_branch(db, job_id, row["story_id"])
        in_use = await _active_siblings(db, job_id, row["story_id"])
        info = await ws.git.run(
            gitops.create_worktree,
            root.path,
            ws.worktree_dir,
            job_id,
            branch,
            reuse_branch=reused,
            in_use=in_use,
            repo=root.path,
        )
    except (gitops.GitError, validate.InvalidInput, OSError) as exc:
        await _give_back(db, worker, job_id, "worktree failed")
        metrics.WORKTREES.labels("create", "failed").inc()
        raise WorktreeUnavailable(
            f"Worktree creation failed: {exc}", transient=isinstance(exc, gitops.GitError)
        ) from exc
    stored = await db.fetchrow(
        _SET_WORKTREE, job_id, worker.token_id, worker.instance_id, info.branch, info.base_sha
    )
    if stored is None:
        # The claim was lost meanwhile (rescued, cancelled): the worktree belongs to nobody.
        await ws.git.run(
            gitops.remove_worktree,
            root.path,
            info.path,
            keep_branch=False,
            worktree_dir=ws.worktree_dir,
            repo=root.path,
        )
        raise WorktreeUnavailable(
            "The claim was lost while the worktree was being made", transient=True
        )
    metrics.WORKTREES.labels("create", "ok").inc()
    log.info(
        "worktree.ready",
        job_id=job_id,
        path=str(info.path),
        branch=info.branch,
        reused_branch=info.reused_branch,
        base=info.base_ref,
        base_sha=info.base_sha[:12],
        removed_stale=[str(path) for path in info.removed_stale],
        repo_root=str(root.path),
        why=f"repo root via {root.via}; "
        + (
            "continuing the story's branch"
            if info.reused_branch
            else "first job of the story with a branch"
        ),
    )
    return WorktreeReady(
        info.path, info.branch, info.reused_branch, info.base_sha, info.base_ref, root.path
    )


async def _clear_earlier_attempt(ws: Workspace, repo_root: Path, job_id: str) -> None:
    """A worktree left by an earlier attempt of this job (requeued at shutdown, rescued after
    a crash) would block this one; remove it, keeping its branch so committed work survives."""
    path = ws.path_for(job_id)
    if path.exists():
        result = await ws.git.run(
            gitops.remove_worktree,
            repo_root,
            path,
            keep_branch=True,
            worktree_dir=ws.worktree_dir,
            repo=repo_root,
        )
        log.info(
            "worktree.replaced",
            job_id=job_id,
            branch=result.branch,
            why="left by an earlier attempt",
        )


async def _story_branch(db: Database, job_id: str, story_id: str | None) -> tuple[str, bool]:
    """The branch to work on, and whether it exists already (continue it as it is)."""
    if story_id is None:
        return validate.branch_name(f"feat/job-{job_id[-8:]}"), False
    existing = await db.fetchrow(_STORY_BRANCH, story_id)
    if existing is not None:
        return validate.branch_name(existing["branch"]), True
    return validate.story_branch(story_id), False


async def _active_siblings(db: Database, job_id: str, story_id: str | None) -> frozenset[str]:
    if story_id is None:
        return frozenset()
    return frozenset(row["id"] for row in await db.fetch(_ACTIVE_SIBLINGS, story_id, job_id))


async def _give_back(db: Database, worker: Worker, job_id: str, reason: str) -> None:
    await rollback_claim(db, worker, job_id, reason=reason)
