"""Real git repositories for tests: a bare origin plus a clone that serves as the repo root.

Test code may call git through subprocess (never a shell); the code under test uses GitPython.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

# A fixed identity and no user/system config, so results do not depend on the machine.
_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its stripped stdout; raise with stderr on failure."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=_ENV, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class Setup:
    origin: Path  # bare repository playing the remote
    root: Path  # the clone worktrees are cut from
    worktrees: Path  # the agent worktree directory (not created yet)
    default_branch: str


def make_setup(base: Path, default_branch: str = "main", files: int = 1) -> Setup:
    """A bare origin with one commit of ``files`` small files on ``default_branch``, cloned."""
    base.mkdir(parents=True, exist_ok=True)
    origin, seed, root = base / "origin.git", base / "seed", base / "root"
    git(base, "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(origin))
    git(base, "init", "--quiet", f"--initial-branch={default_branch}", str(seed))
    for number in range(files):
        (seed / f"file{number}.txt").write_text(f"content {number}\n")
    git(seed, "add", "--all")
    git(seed, "commit", "--quiet", "-m", "initial")
    git(seed, "push", "--quiet", str(origin), f"{default_branch}:{default_branch}")
    git(base, "clone", "--quiet", str(origin), str(root))
    return Setup(origin, root, base / "worktrees", default_branch)


def commit(cwd: Path, name: str = "change.txt", text: str | None = None) -> str:
    """Append to ``name`` in ``cwd``, commit it, and return the new HEAD sha."""
    path = cwd / name
    previous = path.read_text() if path.exists() else ""
    path.write_text(previous + (text or f"line {len(previous.splitlines())}\n"))
    git(cwd, "add", name)
    git(cwd, "commit", "--quiet", "-m", f"change {name}")
    return git(cwd, "rev-parse", "HEAD")


def rev(cwd: Path, ref: str) -> str:
    return git(cwd, "rev-parse", "--verify", ref)


def branches(repo: Path) -> set[str]:
    """Local branch names of ``repo`` (for a bare origin: the branches it holds)."""
    out = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads")
    return set(out.splitlines())


def has_branch(repo: Path, branch: str) -> bool:
    return branch in branches(repo)


def commits_between(repo: Path, base: str, tip: str) -> int:
    return int(git(repo, "rev-list", "--count", f"{base}..{tip}"))


def push_from_other_clone(setup: Setup, branch: str, scratch: Path) -> str:
    """Push a new commit to ``branch`` on origin from a separate clone; return its sha."""
    git(scratch.parent, "clone", "--quiet", str(setup.origin), str(scratch))
    if branch in branches(setup.origin):
        git(scratch, "checkout", "--quiet", branch)
    else:
        git(scratch, "checkout", "--quiet", "-b", branch)
    sha = commit(scratch, "other.txt")
    git(scratch, "push", "--quiet", "origin", f"{branch}:{branch}")
    return sha
