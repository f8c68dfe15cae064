"""A daemon that launches agents, with a real git setup and real jobs, for tests/test_agent.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import trio

from reactor.app import Daemon, serve_daemon
from reactor.config import Settings
from reactor.db import Database
from reactor.sqlfiles import Query
from tests.factory import World, make_world
from tests.gitrepo import Setup, make_setup
from tests.running import settings_for

# What an agent does to leave work behind: a commit in its worktree. The identity is given on
# the command line because HOME points into tmp_path, where there is no git config.
COMMIT = "git -c user.name=t -c user.email=t@e.invalid commit --quiet --allow-empty -m work"


def sql(text: str) -> Query:
    return Query("test", text)


@dataclass
class AgentWorld:
    world: World
    setup: Setup
    home: Path
    logs: Path

    def log_of(self, job_id: str) -> Path:
        return self.logs / f"{job_id}.log"

    def worktree(self, job_id: str) -> Path:
        return self.setup.worktrees / job_id


async def make_agent_world(db: Database, tmp_path: Path) -> AgentWorld:
    world = await make_world(db, repo_url="https://git.example.invalid/acme/app.git")
    setup = make_setup(tmp_path / "repo")
    return AgentWorld(world, setup, tmp_path / "home", tmp_path / "logs")


def agent_settings(
    dsn: str, aw: AgentWorld, command: str, *, repo_root: bool = True, **env: str
) -> Settings:
    """Daemon settings with small limits, so a stuck test fails in seconds, not minutes."""
    values = {
        # The agent gets the daemon's environment; it needs PATH to find git and coreutils.
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "REACTOR_AGENT_COMMAND": command,
        "REACTOR_HEALTH_PORT": "0",
        "REACTOR_CONCURRENCY": "1",
        "REACTOR_LOG_DIR": str(aw.logs),
        "REACTOR_AGENT_GRACE_SECONDS": "1",
        "REACTOR_AGENT_TIMEOUT_SECONDS": "60",
        "REACTOR_CLEANUP_GRACE_SECONDS": "0",
        "SCRUM4ME_AGENT_WORKTREE_DIR": str(aw.setup.worktrees),
    }
    if repo_root:
        values[f"SCRUM4ME_REPO_ROOT_{aw.world.product_id}"] = str(aw.setup.root)
    values.update(env)
    aw.home.mkdir(parents=True, exist_ok=True)
    return settings_for(dsn, aw.world.token, aw.home, **values)


@asynccontextmanager
async def running_daemon(settings: Settings, db: Database) -> AsyncIterator[Daemon]:
    """serve_daemon in a nursery; stopped (gracefully, as on SIGTERM) when the block ends."""
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve_daemon, settings, db)
        try:
            yield daemon
        finally:
            daemon.stop.set()


async def job_row(db: Database, job_id: str) -> dict[str, Any]:
    found = await db.fetchrow(
        sql("SELECT *, status::text AS s FROM claude_jobs WHERE id = $1"), job_id
    )
    assert found is not None
    return dict(found)


async def status_of(db: Database, job_id: str) -> str:
    return str(await db.fetchval(sql("SELECT status::text FROM claude_jobs WHERE id = $1"), job_id))


async def task_status(db: Database, task_id: str) -> str:
    return str(await db.fetchval(sql("SELECT status::text FROM tasks WHERE id = $1"), task_id))


def read_pid(path: Path) -> int | None:
    """The pid an agent wrote to ``path``, once it has written all of it."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return int(text) if text.endswith("\n") else None


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (a zombie nobody reaped yet counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
