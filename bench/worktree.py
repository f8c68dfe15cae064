"""Worktree creation (handlers.gitops.create_worktree) against a full git clone of the same repo.

Per repository size (default 1,000 and 10,000 files) one bare origin and one clone (the repo
root) are prepared once. Variants, interleaved run by run (order rotated):
- ``worktree``: create_worktree, no node_modules in the repo root;
- ``worktree+node_modules``: the same with a large node_modules dir present (symlinked);
- ``clone``: ``git clone <root>`` (local path: objects hard-linked);
- ``clone --no-local``: ``git clone --no-local <root>`` (objects copied through git's transport);
- ``clone+cp node_modules``: a local clone plus ``cp -a`` of node_modules, what a clone needs
  to be as ready as a worktree that links it.
Each created copy is removed after its run, outside the timing. Medians of ``--runs`` runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import emit, percentiles, progress
from handlers import gitops
from reactor.ids import new_cuid

_GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}
VARIANTS = (
    "worktree",
    "worktree+node_modules",
    "clone",
    "clone --no-local",
    "clone+cp node_modules",
)


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=_GIT_ENV, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr}")
    return proc.stdout.strip()


def make_repo(base: Path, files: int) -> Path:
    """A bare origin with one commit of ``files`` small files (100 per directory), cloned."""
    origin, seed, root = base / "origin.git", base / "seed", base / "root"
    base.mkdir(parents=True)
    git(base, "init", "--quiet", "--bare", "--initial-branch=main", str(origin))
    git(base, "init", "--quiet", "--initial-branch=main", str(seed))
    for number in range(files):
        folder = seed / "src" / f"d{number // 100:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{number}.ts").write_text(f"export const v{number} = {number};\n" * 20)
    git(seed, "add", "--all")
    git(seed, "commit", "--quiet", "-m", "initial")
    git(seed, "push", "--quiet", str(origin), "main:main")
    git(base, "clone", "--quiet", str(origin), str(root))
    shutil.rmtree(seed)
    return root


def make_node_modules(target: Path, files: int) -> None:
    for number in range(files):
        folder = target / f"pkg{number // 50:04d}" / "lib"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"m{number}.js").write_text(f"module.exports = {number};\n" * 10)


def _timed(variant: str, root: Path, scratch: Path, stash: Path) -> float:
    node_modules = root / "node_modules"
    wants_nm = variant in ("worktree+node_modules", "clone+cp node_modules")
    if wants_nm and not node_modules.exists():
        stash.rename(node_modules)
    elif not wants_nm and node_modules.exists():
        node_modules.rename(stash)
    job_id = new_cuid()
    dest = scratch / job_id
    start = time.perf_counter()
    if variant.startswith("worktree"):
        branch = f"feat/story-{job_id[-8:]}"
        gitops.create_worktree(root, scratch, job_id, branch, reuse_branch=False)
    elif variant == "clone --no-local":
        git(scratch, "clone", "--quiet", "--no-local", str(root), str(dest))
    else:
        git(scratch, "clone", "--quiet", str(root), str(dest))
        if variant == "clone+cp node_modules":
            subprocess.run(["cp", "-a", str(node_modules), str(dest / "node_modules")], check=True)
    elapsed = (time.perf_counter() - start) * 1000
    if variant.startswith("worktree"):
        git(root, "worktree", "remove", "--force", str(dest))
        git(root, "branch", "-D", f"feat/story-{job_id[-8:]}")
    else:
        shutil.rmtree(dest)
    return elapsed


def _size(base: Path, files: int, runs: int, nm_files: int) -> dict[str, Any]:
    progress(f"worktree: preparing a repository of {files} files")
    root = make_repo(base / f"repo{files}", files)
    stash = base / f"nm{files}"
    make_node_modules(stash, nm_files)
    scratch = base / f"scratch{files}"
    scratch.mkdir()
    for variant in VARIANTS:  # one unmeasured run each: warm the page cache alike
        _timed(variant, root, scratch, stash)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    for run in range(runs):
        order = VARIANTS[run % len(VARIANTS) :] + VARIANTS[: run % len(VARIANTS)]
        for variant in order:
            times[variant].append(_timed(variant, root, scratch, stash))
    shutil.rmtree(base / f"repo{files}")
    return {
        "files": files,
        "node_modules_files": nm_files,
        "runs": runs,
        "median_ms": {v: percentiles(t)["p50"] for v, t in times.items()},
        "min_ms": {v: percentiles(t)["min"] for v, t in times.items()},
        "max_ms": {v: percentiles(t)["max"] for v, t in times.items()},
    }


async def run(args: Any, logs: Path) -> None:
    base = logs / "worktree"
    for rep in range(args.repeat):
        for files in [int(f) for f in args.files.split(",")]:
            target = base / f"rep{rep}"
            result = await asyncio.to_thread(
                _size, target, files, args.runs, args.node_modules_files
            )
            emit({"bench": "worktree", "repetition": rep + 1, **result})
        shutil.rmtree(base / f"rep{rep}", ignore_errors=True)
