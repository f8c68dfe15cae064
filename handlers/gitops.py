"""Per-job git worktrees: create, push at done, remove.

Synchronous on purpose: callers run these from a worker thread (``trio.to_thread.run_sync``).
Two promises hold throughout: the base is origin's real default branch (never a hard-coded
``origin/main``), and no branch with commits origin lacks is ever deleted or reset.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import git

from handlers import gitrefs, validate
from handlers.gitrefs import (
    NETWORK_TIMEOUT_S,
    GitError,
    default_ref,
    fetch_origin,
    is_ancestor,
    local_tip,
    open_repo,
    remote_tip,
    remove_worktree_dir,
    repo_lock,
    repo_name_from_url,
    run,
    same_path,
    tip_on_origin,
    try_run,
    worktrees,
)
from reactor.logs import get_logger

__all__ = [
    "GitError",
    "PushResult",
    "RemovalResult",
    "WorktreeInfo",
    "branch_tip_on_origin",
    "classify_push_failure",
    "create_worktree",
    "head_sha",
    "push_branch",
    "remove_worktree",
    "repo_name_from_url",
    "resolve_default_ref",
]

log = get_logger("reactor.gitops")

PushReason = Literal["no-credentials", "conflict", "unknown"]

_NO_CREDENTIALS_RE = re.compile(
    r"Authentication failed|could not read Username|terminal prompts disabled", re.IGNORECASE
)
_CONFLICT_RE = re.compile(
    r"non-fast-forward|already exists on the remote|rejected|fetch first", re.IGNORECASE
)


@dataclass(frozen=True)
class WorktreeInfo:
    path: Path
    branch: str
    base_ref: str
    base_sha: str
    reused_branch: bool
    removed_stale: tuple[Path, ...]


@dataclass(frozen=True)
class RemovalResult:
    removed: bool
    branch: str | None
    branch_deleted: bool
    detail: str


@dataclass(frozen=True)
class PushResult:
    outcome: Literal["pushed", "no-changes", "failed"]
    reason: PushReason | None
    detail: str
    head_sha: str | None  # set only for "pushed": the commit origin now has


@dataclass(frozen=True)
class _Plan:
    branch: str
    add_args: tuple[str, ...]  # arguments after `git worktree add`
    reused: bool


def resolve_default_ref(repo_root: Path) -> str:
    """origin's default branch as a ref name (``origin/main``, ``origin/trunk``, ...)."""
    with open_repo(repo_root) as repo:
        return default_ref(repo)


def head_sha(worktree_path: Path) -> str:
    with open_repo(worktree_path) as repo:
        return run(repo, "rev-parse", "HEAD")


def branch_tip_on_origin(repo_root: Path, branch: str) -> bool:
    """Whether the local branch's tip is on origin after a fetch.

    False when it cannot be proven: no such local branch, or origin unreachable.
    """
    validate.branch_name(branch)
    with open_repo(repo_root) as repo:
        tip = local_tip(repo, branch)
        if tip is None:
            return False
        try:
            fetch_origin(repo)
            return tip_on_origin(repo, tip, branch, default_ref(repo))
        except GitError as exc:
            log.warning("gitops.tip_check_failed", branch=branch, why=str(exc))
            return False


def create_worktree(
    repo_root: Path,
    worktree_dir: Path,
    job_id: str,
    branch: str,
    *,
    reuse_branch: bool,
    link_node_modules: bool = True,
    in_use: frozenset[str] = frozenset(),
) -> WorktreeInfo:
    """Create ``<worktree_dir>/<job_id>`` on ``branch``, based on origin's default branch.

    ``in_use`` are job ids whose worktrees hold work in progress: if one of them holds
    ``branch``, this fails instead of evicting it.

    Raises:
        InvalidInput: ``job_id`` or ``branch`` is unsafe (nothing on disk is touched).
        GitError: the path exists, origin is unreachable, or git failed; a half-made
            worktree is removed first.
    """
    validate.job_id(job_id)
    validate.branch_name(branch)
    repo_root, worktree_dir = Path(os.path.abspath(repo_root)), Path(os.path.abspath(worktree_dir))
    path = worktree_dir / job_id
    try:
        return _create_locked(
            repo_root, worktree_dir, path, branch, reuse_branch, link_node_modules, in_use
        )
    except OSError as exc:
        # The lock file and the directory itself: a file in the way, a read-only or full disk.
        raise GitError(
            f"Cannot create worktrees under {worktree_dir}: {exc.strerror or exc}. Check that "
            "SCRUM4ME_AGENT_WORKTREE_DIR points at a writable directory with free space."
        ) from exc


def _create_locked(
    repo_root: Path,
    worktree_dir: Path,
    path: Path,
    branch: str,
    reuse_branch: bool,
    link_node_modules: bool,
    in_use: frozenset[str],
) -> WorktreeInfo:
    with repo_lock(worktree_dir, repo_root), open_repo(repo_root) as repo:
        if os.path.lexists(path):
            raise GitError(
                f"Worktree path already exists: {path}. Remove it (cleanup_my_worktrees) "
                "before claiming this job again."
            )
        fetch_origin(repo)
        base_ref = default_ref(repo)
        run(repo, "worktree", "prune")  # forget worktrees whose directory was deleted by hand
        removed = _evict_stale_holders(repo, branch, worktree_dir, in_use)
        plan: _Plan | None = None
        created_branch = False
        try:
            plan = _plan_checkout(repo, path, branch, base_ref, reuse_branch)
            created_branch = "-b" in plan.add_args and local_tip(repo, plan.branch) is None
            run(repo, "worktree", "add", *plan.add_args)
            if link_node_modules:
                gitrefs.link_node_modules(repo_root, path)
            sha = head_sha(path)
        except Exception as exc:
            _discard_half_made(repo, path)
            if plan is not None and created_branch:
                _drop_new_branch(repo, plan.branch)
            if isinstance(exc, GitError):
                raise
            raise GitError(f"Worktree creation failed for {path}: {exc}") from exc
    log.info(
        "gitops.worktree_created",
        path=str(path),
        branch=plan.branch,
        base_ref=base_ref,
        reused_branch=plan.reused,
        removed_stale=[str(p) for p in removed],
    )
    return WorktreeInfo(path, plan.branch, base_ref, sha, plan.reused, removed)


def _evict_stale_holders(
    repo: git.Repo, branch: str, worktree_dir: Path, in_use: frozenset[str]
) -> tuple[Path, ...]:
    # git refuses to check a branch out twice; the holder is a finished sibling's worktree.
    removed: list[Path] = []
    for entry in worktrees(repo):
        if entry.branch != branch:
            continue
        if entry.is_main or not same_path(entry.path.parent, worktree_dir):
            # Not ours to destroy: it may hold someone's uncommitted work.
            raise GitError(
                f"Branch {branch} is checked out at {entry.path}, outside {worktree_dir}. "
                "Check out another branch there or remove that worktree."
            )
        if entry.path.name in in_use:
            raise GitError(
                f"Branch {branch} is checked out at {entry.path} by job {entry.path.name}, "
                "which is still claimed or running; this job waits until that one ends."
            )
        remove_worktree_dir(repo, entry.path, registered=True)
        log.info(
            "gitops.stale_worktree_removed",
            path=str(entry.path),
            branch=branch,
            why="it still held the branch the new job needs",
        )
        removed.append(entry.path)
    return tuple(removed)


def _plan_checkout(repo: git.Repo, path: Path, branch: str, base_ref: str, reuse: bool) -> _Plan:
    local = local_tip(repo, branch)
    if local is not None and not reuse:
        if not tip_on_origin(repo, local, branch, base_ref):
            return _fresh_branch_beside(repo, path, branch, base_ref)
        run(repo, "branch", "-D", branch)  # origin has every commit of it
        local = None
    remote = remote_tip(repo, branch)
    if remote is not None and (local is None or is_ancestor(repo, local, remote)):
        return _Plan(branch, ("-B", branch, str(path), f"origin/{branch}"), reused=True)
    if local is not None:
        # The local branch has commits origin lacks: check it out as is, never reset it.
        return _Plan(branch, (str(path), branch), reused=True)
    return _Plan(branch, ("-b", branch, "--no-track", str(path), base_ref), reused=False)


def _fresh_branch_beside(repo: git.Repo, path: Path, branch: str, base_ref: str) -> _Plan:
    # The old branch holds unpushed commits; leave it alone and start a new name.
    stamp = int(time.time() * 1000)
    while local_tip(repo, f"{branch}-{stamp}") is not None:
        stamp += 1
    renamed = validate.branch_name(f"{branch}-{stamp}")
    log.warning(
        "gitops.branch_renamed",
        branch=branch,
        renamed=renamed,
        why="local branch has commits origin lacks; it is kept untouched",
    )
    return _Plan(renamed, ("-b", renamed, "--no-track", str(path), base_ref), reused=False)


def _drop_new_branch(repo: git.Repo, branch: str) -> None:
    """`worktree add -b` may create the branch before failing; a retry must find it absent.
    Only called for a branch this call created, so no commit of anyone's can be on it."""
    try:
        run(repo, "branch", "-D", branch)
    except GitError:
        log.warning("gitops.branch_cleanup_failed", branch=branch)


def _discard_half_made(repo: git.Repo, path: Path) -> None:
    try:
        remove_worktree_dir(repo, path, registered=True)
    except (GitError, OSError):
        log.exception("gitops.cleanup_failed", path=str(path))


def remove_worktree(
    repo_root: Path, worktree_path: Path, *, keep_branch: bool, worktree_dir: Path | None = None
) -> RemovalResult:
    """Remove a job's worktree; delete its branch only if asked and origin has every commit.

    Args:
        worktree_dir: when given, ``worktree_path`` must be directly inside it.

    Raises:
        InvalidInput: the path contains '..' or its last component is not a job id.
        GitError: the path is or contains the repository, is a standalone clone, lies outside
            ``worktree_dir``, or could not be removed.
    """
    repo_root = Path(os.path.abspath(repo_root))
    worktree_path = _removal_target(repo_root, worktree_path, worktree_dir)
    if not os.path.lexists(worktree_path):
        return RemovalResult(False, None, False, f"no worktree directory at {worktree_path}")
    with repo_lock(worktree_path.parent, repo_root), open_repo(repo_root) as repo:
        entry = next((e for e in worktrees(repo) if same_path(e.path, worktree_path)), None)
        if entry is None and (worktree_path / ".git").is_dir():
            raise GitError(
                f"Refusing to remove {worktree_path}: it is a standalone repository, not a "
                "worktree of this repository. Remove it by hand if it is really garbage."
            )
        if entry is not None and entry.is_main:
            raise GitError(f"Refusing to remove {worktree_path}: it is the main worktree")
        remove_worktree_dir(repo, worktree_path, registered=entry is not None)
        branch = entry.branch if entry is not None else None
        deleted, detail = _settle_branch(repo, branch, keep_branch)
    log.info(
        "gitops.worktree_removed",
        path=str(worktree_path),
        branch=branch,
        branch_deleted=deleted,
        why=detail,
    )
    return RemovalResult(True, branch, deleted, detail)


def _removal_target(repo_root: Path, worktree_path: Path, worktree_dir: Path | None) -> Path:
    # A leftover directory unknown to git is deleted recursively, so only a plain
    # <dir>/<job_id> that holds no part of the repository may ever reach that point.
    if ".." in Path(worktree_path).parts:
        raise validate.InvalidInput(f"worktree path {worktree_path} must not contain '..'")
    path = Path(os.path.abspath(worktree_path))
    validate.job_id(path.name)
    if worktree_dir is not None and not same_path(path.parent, worktree_dir):
        raise GitError(f"Refusing to remove {path}: it is not inside {worktree_dir}")
    real_root, real_path = os.path.realpath(repo_root), os.path.realpath(path)
    if real_root == real_path or real_root.startswith(real_path + os.sep):
        raise GitError(f"Refusing to remove {path}: it is or contains the repository {repo_root}")
    return path


def _settle_branch(repo: git.Repo, branch: str | None, keep_branch: bool) -> tuple[bool, str]:
    if branch is None:
        return False, "no branch was checked out (detached HEAD or not a registered worktree)"
    if keep_branch:
        return False, "kept: the caller asked to keep the branch"
    tip = local_tip(repo, branch)
    if tip is None:
        return False, "the branch no longer exists locally"
    try:
        fetch_origin(repo)
        base_ref = default_ref(repo)
        if not tip_on_origin(repo, tip, branch, base_ref):
            return False, f"kept: tip {tip[:12]} has commits origin lacks"
        run(repo, "branch", "-D", branch)
    except GitError as exc:
        return False, f"kept: could not prove or finish a safe delete: {exc}"
    return True, f"deleted: tip {tip[:12]} is on origin (origin/{branch} or {base_ref})"


def push_branch(worktree_path: Path, branch: str, base_sha: str | None) -> PushResult:
    """Push the job branch unless HEAD is still at ``base_sha`` (or at origin's default)."""
    validate.branch_name(branch)
    with open_repo(worktree_path) as repo:
        head = run(repo, "rev-parse", "HEAD")
        try:
            base = base_sha or run(repo, "rev-parse", f"{default_ref(repo)}^{{commit}}")
        except GitError as exc:
            return PushResult("failed", "unknown", f"cannot resolve a base to compare: {exc}", None)
        if head == base and _origin_has(repo, head, branch):
            # An earlier attempt's unpushed commits sit below the base of a retried job's
            # worktree, so "HEAD is the base" alone does not mean there is nothing to push.
            return PushResult("no-changes", None, f"HEAD {head[:12]} equals the base", None)
        if local_tip(repo, branch) != head:
            # Pushing the branch would publish a commit other than the work in this worktree.
            return PushResult(
                "failed", "unknown", f"HEAD {head[:12]} is not the tip of {branch}", None
            )
        ref = f"refs/heads/{branch}"
        result = try_run(repo, "push", "-u", "origin", f"{ref}:{ref}", timeout=NETWORK_TIMEOUT_S)
    if result.ok:
        return PushResult("pushed", None, result.err, head)
    detail = result.err or f"git push exited with status {result.status}"
    return PushResult("failed", classify_push_failure(detail), detail, None)


def _origin_has(repo: git.Repo, commit: str, branch: str) -> bool:
    try:
        return tip_on_origin(repo, commit, branch, default_ref(repo))
    except GitError:
        return False  # nothing to compare with: let the push decide


def classify_push_failure(stderr: str) -> PushReason:
    """Sort a failed push's stderr into the reasons the job record distinguishes."""
    if _NO_CREDENTIALS_RE.search(stderr):
        return "no-credentials"
    if _CONFLICT_RE.search(stderr):
        return "conflict"
    return "unknown"
