"""Low-level git plumbing for :mod:`handlers.gitops`: running git, reading refs, the repo lock.

Everything here is synchronous and opens its own :class:`git.Repo`, because GitPython objects
must not be shared between the worker threads that call into this package.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import git

# Network commands get a ceiling so a hung remote cannot pin a worker thread forever.
NETWORK_TIMEOUT_S = 300.0

_REPO_NAME_RE = re.compile(r"[/:]([^/]+?)(?:\.git)?/?$")
# A repo name ends up in env var names and in ~/Projects/<name>: keep it to a plain file name.
_SAFE_REPO_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


class GitError(Exception):
    """A git operation failed; the message says what failed and what to fix."""


@dataclass(frozen=True)
class GitResult:
    status: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass(frozen=True)
class WorktreeEntry:
    path: Path
    branch: str | None  # short name; None when detached or bare
    is_main: bool


@contextmanager
def open_repo(path: Path) -> Iterator[git.Repo]:
    """Open a fresh repository handle for one call and always close it."""
    try:
        # expand_vars=False: a '$' in a configured path must stay a literal character.
        repo = git.Repo(path, expand_vars=False)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError) as exc:
        raise GitError(f"{path} is not a git repository (or does not exist): {exc}") from exc
    try:
        # A missing credential must fail the command instead of waiting for a terminal.
        # GitPython already forces LC_ALL=C, so stderr stays English for the push classifier.
        repo.git.update_environment(GIT_TERMINAL_PROMPT="0")
        yield repo
    finally:
        repo.close()


def try_run(repo: git.Repo, *args: str, timeout: float | None = None) -> GitResult:
    """Run ``git <args>`` in the repository's working directory; never raises on exit status."""
    executable = git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git"
    status, out, err = repo.git.execute(
        [executable, *args],
        with_extended_output=True,
        with_exceptions=False,
        kill_after_timeout=timeout,
    )
    return GitResult(status, out, err.strip())


def run(repo: git.Repo, *args: str, timeout: float | None = None) -> str:
    """Run ``git <args>`` and return stdout, or raise :class:`GitError` with git's stderr."""
    result = try_run(repo, *args, timeout=timeout)
    if not result.ok:
        raise GitError(
            f"`git {' '.join(args)}` failed in {repo.working_dir} "
            f"(exit {result.status}): {result.err or result.out}"
        )
    return result.out


def fetch_origin(repo: git.Repo) -> None:
    """Bring the remote-tracking refs up to date, dropping branches deleted on origin."""
    result = try_run(repo, "fetch", "origin", "--prune", timeout=NETWORK_TIMEOUT_S)
    if not result.ok:
        raise GitError(
            f"Cannot fetch from origin in {repo.working_dir}: {result.err}. "
            "Check the remote URL and that credentials work without a prompt."
        )


def default_ref(repo: git.Repo) -> str:
    """origin's default branch as a remote-tracking ref name, e.g. ``origin/trunk``."""
    # set-head asks the remote; offline it fails, and a cached origin/HEAD is still good.
    try_run(repo, "remote", "set-head", "origin", "--auto", timeout=NETWORK_TIMEOUT_S)
    head = try_run(repo, "symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD")
    if head.ok and head.out.startswith("origin/") and _ref_sha(repo, f"refs/remotes/{head.out}"):
        return head.out
    for name in ("main", "master"):
        if remote_tip(repo, name) is not None:
            return f"origin/{name}"
    raise GitError(
        f"Cannot tell origin's default branch for {repo.working_dir}: origin/HEAD is not set and "
        "neither origin/main nor origin/master exists. Run `git remote set-head origin <branch>` "
        "in that clone."
    )


def _ref_sha(repo: git.Repo, ref: str) -> str | None:
    result = try_run(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    return result.out if result.ok and result.out else None


def local_tip(repo: git.Repo, branch: str) -> str | None:
    return _ref_sha(repo, f"refs/heads/{branch}")


def remote_tip(repo: git.Repo, branch: str) -> str | None:
    return _ref_sha(repo, f"refs/remotes/origin/{branch}")


def is_ancestor(repo: git.Repo, commit: str, of: str) -> bool:
    result = try_run(repo, "merge-base", "--is-ancestor", commit, of)
    if result.status in (0, 1):
        return result.ok
    raise GitError(f"Cannot compare {commit} with {of} in {repo.working_dir}: {result.err}")


def tip_on_origin(repo: git.Repo, tip: str, branch: str, base_ref: str) -> bool:
    """Whether origin already has ``tip``, on its own branch or on the default branch."""
    remote = remote_tip(repo, branch)
    if remote is not None and is_ancestor(repo, tip, remote):
        return True
    return is_ancestor(repo, tip, base_ref)


def worktrees(repo: git.Repo) -> list[WorktreeEntry]:
    """The repository's worktrees, main worktree first (``git worktree list --porcelain -z``)."""
    entries: list[WorktreeEntry] = []
    path: Path | None = None
    branch: str | None = None
    # -z: a path may contain a newline; records end with an empty field.
    for field in [*run(repo, "worktree", "list", "--porcelain", "-z").split("\0"), ""]:
        if field.startswith("worktree "):
            path, branch = Path(field[len("worktree ") :]), None
        elif field.startswith("branch refs/heads/"):
            branch = field[len("branch refs/heads/") :]
        elif not field and path is not None:
            entries.append(WorktreeEntry(path, branch, is_main=not entries))
            path = None
    return entries


def same_path(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


@contextmanager
def repo_lock(worktree_dir: Path, repo_root: Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock for one repository.

    Concurrent ``git worktree add`` on one repository races inside git (it can fail reading
    ``.git/worktrees/<name>/commondir``). flock locks belong to the open file description, so
    threads of one process that each open the file exclude each other as well.
    """
    digest = hashlib.sha1(str(repo_root.resolve()).encode(), usedforsecurity=False).hexdigest()
    lock_dir = worktree_dir / ".locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_dir / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def link_node_modules(repo_root: Path, path: Path) -> None:
    """Share the clone's node_modules with a worktree through a symlink, if there is one."""
    shared = repo_root / "node_modules"
    link = path / "node_modules"
    if not shared.is_dir() or os.path.lexists(link):
        return
    link.symlink_to(shared, target_is_directory=True)
    # git does not ignore an untracked symlink; keep it out of `git status` and `git add -A`.
    with open_repo(path) as worktree:
        exclude = Path(run(worktree, "rev-parse", "--git-path", "info/exclude"))
    _append_line_once(exclude if exclude.is_absolute() else path / exclude, "/node_modules")


def _append_line_once(file: Path, line: str) -> None:
    text = file.read_text() if file.exists() else ""
    if line in text.splitlines():
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    separator = "\n" if text and not text.endswith("\n") else ""
    with file.open("a") as handle:
        handle.write(f"{separator}{line}\n")


def remove_worktree_dir(repo: git.Repo, path: Path, *, registered: bool) -> None:
    """Delete a worktree directory (registered with git or a leftover) and prune git's record."""
    if registered and os.path.lexists(path):
        # Failure is fine: a directory git does not know is deleted by hand below.
        try_run(repo, "worktree", "remove", "--force", str(path))
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)  # unlinks symlinks inside (node_modules) without following them
    run(repo, "worktree", "prune")


def repo_name_from_url(url: str) -> str | None:
    """The repository name at the end of a clone URL, or None if it is missing or unsafe."""
    match = _REPO_NAME_RE.search(url.strip())
    if match is None:
        return None
    name = match.group(1)
    if _SAFE_REPO_NAME_RE.fullmatch(name) is None or ".." in name:
        return None
    return name
