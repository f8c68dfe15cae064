"""Where worktrees live and how git runs: threads bounded, one repository at a time.

GitPython is blocking, so every git operation runs in a worker thread, at most
``REACTOR_GIT_THREADS`` at once (trio's default of 40 threads would let a burst of claims
saturate the disk). Operations on one repository also take a trio lock before the thread
starts: concurrent ``git worktree add`` calls race inside git (stack-wiring rule 7), and
gitops' file lock only serializes across processes, not without tying up threads.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import trio

from handlers import validate
from handlers.repo_root import RepoRootConfig
from reactor.config import Settings

T = TypeVar("T")


class GitRunner:
    def __init__(self, threads: int = 4) -> None:
        self._limiter = trio.CapacityLimiter(threads)
        self._locks: dict[str, trio.Lock] = {}

    async def run(
        self, fn: Callable[..., T], *args: object, repo: Path | None = None, **kwargs: object
    ) -> T:
        """Run a blocking git function in a thread (uncancellable: a half-done git is worse)."""
        call = functools.partial(fn, *args, **kwargs)
        if repo is None:
            return await trio.to_thread.run_sync(call, limiter=self._limiter)
        # Repo roots are absolute paths from validated config: the string is a fine key.
        lock = self._locks.setdefault(str(repo), trio.Lock())
        async with lock:
            return await trio.to_thread.run_sync(call, limiter=self._limiter)


@dataclass(frozen=True)
class Workspace:
    """Settings the git handlers need, plus the shared runner and local bookkeeping."""

    worktree_dir: Path
    repo_roots: RepoRootConfig
    git: GitRunner
    enabled: bool = True
    cleanup_grace_seconds: float = 5.0
    # Worktrees an agent launched by this process is still working in: never removed.
    in_use: set[str] = field(default_factory=set)

    @classmethod
    def from_settings(cls, settings: Settings, git: GitRunner | None = None) -> Workspace:
        return cls(
            worktree_dir=settings.worktree_dir,
            repo_roots=RepoRootConfig(
                by_product=settings.repo_roots_by_product,
                by_repo=settings.repo_roots_by_repo,
                config_file=settings.agent_config_file,
                home=settings.home,
            ),
            git=git or GitRunner(settings.git_threads),
            enabled=settings.worktrees,
            cleanup_grace_seconds=settings.cleanup_grace_seconds,
        )

    def path_for(self, job_id: str) -> Path:
        """``<worktree dir>/<job id>``, refusing any id that could escape the directory."""
        return self.worktree_dir / validate.job_id(job_id)
