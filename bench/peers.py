"""Parent side of the peers: schema setup, the producer (enqueue), and the worker child.

Each peer gets its own database. Settings follow peer-figures.md:
- pgqueuer: schema from ``pgq install`` (durable) + ``pgq autovac``; QueueManager +
  AsyncpgDriver on uvloop; defaults batch_size 10; tuned batch_size 200 + AsyncpgPoolDriver.
- procrastinate: App(PsycopgConnector), schema applied by the schema manager (what
  ``procrastinate schema --apply`` runs); defaults concurrency 1; tuned concurrency 30.
- polling5s: scrum4me-mcp's original wait_for_job loop on the Scrum4Me schema.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import Child, Children, Server, bench_database, prepare_database, run_checked
from bench.peer_workers import ENTRYPOINT, procrastinate_app
from bench.world import World, enqueue, make_world

PEER_SETTINGS: dict[str, dict[str, list[str]]] = {
    "pgqueuer": {"defaults": ["--batch-size", "10"], "tuned": ["--batch-size", "200", "--pool"]},
    "procrastinate": {"defaults": ["--concurrency", "1"], "tuned": ["--concurrency", "30"]},
}


async def settle(dsn: str) -> None:
    """VACUUM ANALYZE, CHECKPOINT and 1 s of quiet before a latency run."""
    await prepare_database(dsn)
    await asyncio.sleep(1.0)


class PeerSystem:
    """A latency system whose worker is a child speaking the bench line protocol."""

    def __init__(
        self,
        name: str,
        child: Child,
        enqueue: Callable[[], Awaitable[str]],
        *,
        settle_line: str | None = None,
    ) -> None:
        self.name = name
        self.child = child
        self._enqueue = enqueue
        self._settle_line = settle_line

    async def enqueue(self) -> str:
        return await self._enqueue()

    async def pickup(self, job_id: str) -> float:
        line = await self.child.expect("c")
        if line[2] != job_id:
            raise RuntimeError(f"{self.name} ran job {line[2]}, expected {job_id}")
        return float(line[1])

    async def settle(self, job_id: str) -> None:
        if self._settle_line is not None:
            await self.child.expect(self._settle_line)


def worker_args(system: str, dsn: str, mode: str, extra: list[str]) -> list[str]:
    return ["-m", "bench.peer_workers", system, "--dsn", dsn, "--mode", mode, *extra]


# ---------------------------------------------------------------- schemas and producers


def install_pgqueuer(dsn: str) -> None:
    pgq = [sys.executable, "-m", "pgqueuer", "--pg-dsn", dsn]
    run_checked([*pgq, "install"])
    run_checked([*pgq, "autovac"])


async def pgqueuer_producer(conn: asyncpg.Connection) -> Any:
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    return Queries(AsyncpgDriver(conn))


async def fill_pgqueuer(dsn: str, jobs: int) -> None:
    install_pgqueuer(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        queries = await pgqueuer_producer(conn)
        for start in range(0, jobs, 5000):
            count = min(5000, jobs - start)
            await queries.enqueue([ENTRYPOINT] * count, [None] * count, [0] * count)
    finally:
        await conn.close()


async def fill_procrastinate(dsn: str, jobs: int) -> None:
    app = procrastinate_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        task = app.tasks[ENTRYPOINT]
        for start in range(0, jobs, 5000):
            await task.batch_defer_async(*({} for _ in range(min(5000, jobs - start))))


async def verify_peer(system: str, dsn: str, jobs: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        if system == "pgqueuer":
            left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
            return {"db_jobs_left": left, "db_ok": left == 0}
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'succeeded') AS ok, "
            "count(*) FILTER (WHERE attempts > 1) AS retried FROM procrastinate_jobs"
        )
        assert row is not None
        return {
            "db_succeeded": row["ok"],
            "db_retried": row["retried"],
            "db_ok": row["ok"] == jobs and row["retried"] == 0,
        }
    finally:
        await conn.close()


# ---------------------------------------------------------------- latency systems


@asynccontextmanager
async def latency_system(server: Server, system: str, logs: Path) -> AsyncIterator[PeerSystem]:
    """The peer at its latency settings (defaults), in its own database, with its producer."""
    async with bench_database(server, system.replace("-", "_")) as dsn, Children() as children:
        log = logs / f"{system}-latency.log"
        conn = await asyncpg.connect(dsn)
        try:
            if system == "pgqueuer":
                install_pgqueuer(dsn)
                await settle(dsn)
                queries = await pgqueuer_producer(conn)

                async def pgq_enqueue() -> str:
                    return str((await queries.enqueue(ENTRYPOINT, None))[0])

                child = await children.start(
                    system, worker_args(system, dsn, "latency", []), env=None, log=log
                )
                await child.expect("ready")
                yield PeerSystem(system, child, pgq_enqueue)
            elif system == "procrastinate":
                app = procrastinate_app(dsn)
                async with app.open_async():
                    await app.schema_manager.apply_schema_async()
                    await settle(dsn)
                    task = app.tasks[ENTRYPOINT]

                    async def defer() -> str:
                        return str(await task.defer_async())

                    child = await children.start(
                        system, worker_args(system, dsn, "latency", []), env=None, log=log
                    )
                    await child.expect("ready")
                    yield PeerSystem(system, child, defer)
            elif system == "polling5s":
                world: World = await make_world(dsn)
                await settle(dsn)
                task_id = world.task_ids[0]

                async def ui_enqueue() -> str:
                    return await enqueue(conn, world, task_id)

                extra = ["--user", world.user_id, "--token-id", world.token_id]
                child = await children.start(
                    system, worker_args(system, dsn, "latency", extra), env=None, log=log
                )
                await child.expect("ready")
                yield PeerSystem(system, child, ui_enqueue, settle_line="d")
            else:
                raise ValueError(f"unknown system {system}")
        finally:
            await conn.close()
