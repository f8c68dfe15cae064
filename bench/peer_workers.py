"""Worker children for the peers: PgQueuer, Procrastinate and the original 5 s polling loop.

    python -m bench.peer_workers <pgqueuer|procrastinate|polling5s> --dsn DSN [options]

Same protocol as bench.reactor_worker: ``ready``; ``c <perf_counter> <job id>`` as the
handler's first statement; ``drained <perf_counter> <cpu seconds>`` when a drain returns;
``go`` on stdin starts a drain (throughput), EOF stops the process. Handlers are no-ops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg

ENTRYPOINT = "bench"


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def stdin_commands(on_go: Callable[[], None]) -> None:
    """Call ``on_go`` for each ``go`` line; return at EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb"))
    while line := await reader.readline():
        if line.strip() == b"go":
            on_go()


async def serve(
    latency: Callable[[], Coroutine[Any, Any, None]],
    drain: Callable[[], Awaitable[None]],
    mode: str,
) -> None:
    """latency: run the worker until stdin closes. throughput: drain once on ``go``."""
    if mode == "latency":
        worker = asyncio.create_task(latency())
        say("ready")
        await stdin_commands(lambda: None)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker
        return
    go = asyncio.Event()
    commands = asyncio.create_task(stdin_commands(go.set))
    say("ready")
    await go.wait()
    await drain()
    say(f"drained {time.perf_counter()!r} {cpu_seconds()!r}")
    await commands


# ---------------------------------------------------------------- PgQueuer


async def pgqueuer_main(args: Any) -> None:
    from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
    from pgqueuer.models import Job
    from pgqueuer.qm import QueueManager
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    pool = None
    if args.pool:
        pool = await asyncpg.create_pool(args.dsn)
        driver: Any = AsyncpgPoolDriver(pool)
    else:
        driver = AsyncpgDriver(await asyncpg.connect(args.dsn))
    qm = QueueManager(Queries(driver))

    @qm.entrypoint(ENTRYPOINT)
    async def handler(job: Job) -> None:
        say(f"c {time.perf_counter()!r} {job.id}")

    async def latency() -> None:
        await qm.run(batch_size=args.batch_size)

    async def drain() -> None:
        await qm.run(batch_size=args.batch_size, mode=QueueExecutionMode.drain)

    await serve(latency, drain, args.mode)


# ---------------------------------------------------------------- Procrastinate


def procrastinate_app(dsn: str) -> Any:
    """App(PsycopgConnector) with the no-op task; the parent defers through the same app."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name=ENTRYPOINT, pass_context=True)
    async def noop(context: Any) -> None:
        say(f"c {time.perf_counter()!r} {context.job.id}")

    return app


async def procrastinate_main(args: Any) -> None:
    app = procrastinate_app(args.dsn)
    async with app.open_async():

        async def latency() -> None:
            await app.run_worker_async(concurrency=args.concurrency, install_signal_handlers=False)

        async def drain() -> None:
            await app.run_worker_async(
                concurrency=args.concurrency, wait=False, install_signal_handlers=False
            )

        await serve(latency, drain, args.mode)


# ---------------------------------------------------------------- the original 5 s polling loop

# scrum4me-mcp's wait_for_job (reference scrum4me-mcp.md section 2.2), on the Scrum4Me schema:
# resetStaleClaimedJobs (two statements), then tryClaimJob (one transaction); when nothing was
# claimed, LISTEN scrum4me_changes on a dedicated connection and wait up to POLL_INTERVAL (5 s)
# or for a claude_job_enqueued notification of this user (which no trigger sends), then again.
_FAIL_STALE = """
UPDATE claude_jobs SET status='FAILED', finished_at=NOW(),
       error='agent did not complete job within 2 attempts'
WHERE user_id=$1 AND status IN ('CLAIMED','RUNNING') AND retry_count >= 2
  AND (lease_until < NOW() OR (lease_until IS NULL AND claimed_at < NOW() - INTERVAL '30 minutes'))
RETURNING id
"""
_REQUEUE_STALE = """
UPDATE claude_jobs SET status='QUEUED', claimed_by_token_id=NULL, claimed_at=NULL,
       plan_snapshot=NULL, lease_until=NULL, worker_instance_id=NULL, retry_count=retry_count+1
WHERE user_id=$1 AND status IN ('CLAIMED','RUNNING') AND retry_count < 2
  AND (lease_until < NOW() OR (lease_until IS NULL AND claimed_at < NOW() - INTERVAL '30 minutes'))
RETURNING id, retry_count
"""
# The era's claim required a sprint run for TASK_IMPLEMENTATION; the bench's jobs have none,
# so that clause is left out (it changes nothing about the timing, which the poll dominates).
_SELECT = """
SELECT cj.id, t.implementation_plan, cj.sprint_run_id
FROM claude_jobs cj LEFT JOIN tasks t ON t.id = cj.task_id
LEFT JOIN sprint_runs sr ON sr.id = cj.sprint_run_id
WHERE cj.user_id = $1 AND cj.status = 'QUEUED'
ORDER BY cj.created_at ASC LIMIT 1
FOR UPDATE OF cj SKIP LOCKED
"""
_CLAIM = """
UPDATE claude_jobs SET status='CLAIMED', claimed_by_token_id=$2, claimed_at=NOW(),
  plan_snapshot=$3, worker_instance_id=$4, lease_until=NOW() + INTERVAL '5 minutes'
WHERE id=$1
"""
_START_RUN = """
UPDATE sprint_runs SET status='RUNNING', started_at=COALESCE(started_at, NOW()), updated_at=NOW()
WHERE id=$1 AND status='QUEUED'
"""
_DONE = "UPDATE claude_jobs SET status='DONE', finished_at=NOW() WHERE id=$1"
POLL_INTERVAL_S = 5.0


class Polling:
    """One agent looping on the original wait_for_job."""

    def __init__(self, args: Any, conn: asyncpg.Connection) -> None:
        self.args, self.conn = args, conn
        self.woken = asyncio.Event()

    async def try_claim(self) -> str | None:
        conn, user = self.conn, self.args.user
        await conn.fetch(_FAIL_STALE, user)
        await conn.fetch(_REQUEUE_STALE, user)
        async with conn.transaction():
            row = await conn.fetchrow(_SELECT, user)
            if row is None:
                return None
            plan = row["implementation_plan"] or ""
            await conn.execute(_CLAIM, row["id"], self.args.token_id, plan, "polling5s")
            if row["sprint_run_id"] is not None:
                await conn.execute(_START_RUN, row["sprint_run_id"])
        return str(row["id"])

    def notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        text = str(payload)
        if '"claude_job_enqueued"' in text and self.args.user in text:
            self.woken.set()

    async def wait_for_job(self) -> str:
        job = await self.try_claim()
        if job is not None:
            return job
        listen = await asyncpg.connect(self.args.dsn)
        try:
            await listen.add_listener("scrum4me_changes", self.notified)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.woken.wait(), POLL_INTERVAL_S)
                self.woken.clear()
                job = await self.try_claim()
                if job is not None:
                    return job
        finally:
            await listen.close()

    async def latency(self) -> None:
        while True:  # the agent: wait_for_job, do the (no-op) job, report done, repeat
            job = await self.wait_for_job()
            say(f"c {time.perf_counter()!r} {job}")
            await self.conn.execute(_DONE, job)
            say(f"d {time.perf_counter()!r} {job}")

    async def drain(self) -> None:
        raise RuntimeError("polling5s is measured for latency only")


async def polling_main(args: Any) -> None:
    polling = Polling(args, await asyncpg.connect(args.dsn))
    await serve(polling.latency, polling.drain, args.mode)


# ---------------------------------------------------------------- the SQL floor

# The reactor's own claim and finish statements on the Scrum4Me schema, driven by the
# simplest loop that keeps the same semantics: claim up to the free slots in one statement,
# finish each job in its own statement (one commit per job, as update_job_status does).
# Plain asyncio and asyncpg: no trio-asyncio bridge, no listener, no logging. The difference
# to the reactor is what the reactor's Python costs; the rest is what this table costs.
_SQL_DIR = Path(__file__).resolve().parents[1] / "sql" / "queries"


def named_query(file: str, name: str) -> str:
    """One ``-- name:`` block of sql/queries/<file>.sql, read without importing reactor."""
    text = (_SQL_DIR / f"{file}.sql").read_text(encoding="utf-8")
    block = text.split(f"-- name: {name}\n", 1)[1].split("\n-- name: ", 1)[0]
    return block.strip()


# What handlers/presence.py registers (not imported: that would import reactor, and with it
# trio_asyncio, into this plain asyncio process).
CAPABILITIES = ("code_edit", "planning", "review")
_ANY_QUEUED = "SELECT EXISTS (SELECT 1 FROM claude_jobs WHERE user_id = $1 AND status = 'QUEUED')"


class SqlFloor:
    def __init__(self, args: Any, pool: asyncpg.Pool) -> None:
        self.args, self.pool = args, pool
        self.claim = named_query("jobs", "claim")
        self.finish = named_query("transitions", "finish")
        self.kinds = ["TASK_IMPLEMENTATION"]
        self.in_flight: set[asyncio.Task[None]] = set()
        self.wake = asyncio.Event()

    async def _finish(self, job_id: str) -> None:
        a = self.args
        none = [None] * 11
        await self.pool.fetchrow(
            self.finish, job_id, a.token_id, a.instance, "DONE", *none, self.kinds
        )
        say(f"d {time.perf_counter()!r} {job_id}")

    def _done(self, task: asyncio.Task[None]) -> None:
        self.in_flight.discard(task)
        self.wake.set()

    async def drain(self) -> None:
        a = self.args
        while True:
            free = a.concurrency - len(self.in_flight)
            if free > 0:
                busy = bool(self.in_flight)
                rows = await self.pool.fetch(
                    self.claim, a.user, a.token_id, a.instance, None, self.kinds, 300, free, [],
                    list(CAPABILITIES),
                )  # fmt: skip
                for row in rows:
                    say(f"c {time.perf_counter()!r} {row['id']}")
                    task = asyncio.create_task(self._finish(row["id"]))
                    self.in_flight.add(task)
                    task.add_done_callback(self._done)
                if not rows and not self.in_flight:
                    # A finish that committed during the claim was not in its snapshot, and
                    # another process may hold the heads of the stories left: drained only
                    # when nothing ran meanwhile and no job is queued at all.
                    if not busy and not await self.pool.fetchval(_ANY_QUEUED, a.user):
                        return
                    await asyncio.sleep(0.001)
                    continue
            await self.wake.wait()
            self.wake.clear()

    async def latency(self) -> None:
        raise RuntimeError("sqlfloor is measured for throughput only")


async def sqlfloor_main(args: Any) -> None:
    # The reactor's pool size (REACTOR_POOL_SIZE default): completions queue for a
    # connection the same way, and K processes stay within max_connections.
    pool = await asyncpg.create_pool(args.dsn, min_size=2, max_size=8)
    floor = SqlFloor(args, pool)
    await serve(floor.latency, floor.drain, args.mode)


def cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_workers")
    parser.add_argument("system", choices=["pgqueuer", "procrastinate", "polling5s", "sqlfloor"])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--mode", choices=["latency", "throughput"], default="latency")
    parser.add_argument("--batch-size", type=int, default=10, help="pgqueuer")
    parser.add_argument("--pool", action="store_true", help="pgqueuer: AsyncpgPoolDriver")
    parser.add_argument("--concurrency", type=int, default=1, help="procrastinate, sqlfloor")
    parser.add_argument("--user", default="", help="polling5s, sqlfloor: user id")
    parser.add_argument("--token-id", default="", help="polling5s, sqlfloor: token id")
    parser.add_argument("--instance", default="sqlfloor", help="sqlfloor: worker instance id")
    args = parser.parse_args()
    if args.system == "pgqueuer":
        import uvloop  # as `pgq run` does

        uvloop.run(pgqueuer_main(args))
    elif args.system == "procrastinate":
        asyncio.run(procrastinate_main(args))
    elif args.system == "sqlfloor":
        asyncio.run(sqlfloor_main(args))
    else:
        asyncio.run(polling_main(args))


if __name__ == "__main__":
    cli()
