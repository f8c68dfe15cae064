"""Burn-down throughput: N pre-inserted no-op jobs, K worker processes, clock from "go".

Protocol (peer-figures): insert N jobs in bulk, VACUUM ANALYZE + CHECKPOINT, start K workers and
wait until each reports ready, say "go" and start the clock. The clock stops at the last
completion: for the reactor, the latest ``update_job_status(done)`` return reported by any
worker (its processes never exit on their own); for a peer, when the last process's drain
returned. Afterwards every job must have been handled exactly once; for the reactor also that
every job is DONE without retries and each story's order held (a job claimed only after the
previous job of its story finished).

The reactor's jobs are 1,000 stories x 10 tasks, so at most 1,000 are claimable at a time;
the peers have no story order and see all N at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.common import (
    Child,
    Children,
    CpuSnapshot,
    Server,
    bench_database,
    emit,
    prepare_database,
    progress,
)
from bench.peers import PEER_SETTINGS, fill_pgqueuer, fill_procrastinate, verify_peer, worker_args
from bench.world import insert_jobs, make_world, reactor_env

# Systems that run on the Scrum4Me schema with its story order (the others bring their own).
SCRUM4ME_SYSTEMS = ("reactor", "sqlfloor")

_STORY_ORDER = """
WITH ordered AS (
    SELECT j.status, j.retry_count, j.claimed_at,
           lag(j.finished_at) OVER (PARTITION BY t.story_id ORDER BY j.created_at, j.id)
               AS previous_finished
    FROM claude_jobs j JOIN tasks t ON t.id = j.task_id
)
SELECT count(*) AS jobs,
       count(*) FILTER (WHERE status = 'DONE') AS done,
       count(*) FILTER (WHERE retry_count <> 0) AS retried,
       count(*) FILTER (WHERE claimed_at < previous_finished) AS order_violations,
       COALESCE(EXTRACT(EPOCH FROM max(previous_finished - claimed_at)
                FILTER (WHERE claimed_at < previous_finished)) * 1000, 0)::float8
           AS order_violation_max_ms
FROM ordered
"""
_VIOLATIONS = """
WITH ordered AS (
    SELECT t.story_id, j.id, j.created_at, j.claimed_at, j.finished_at, j.worker_instance_id,
           lag(j.id) OVER w AS previous_id, lag(j.finished_at) OVER w AS previous_finished,
           lag(j.claimed_at) OVER w AS previous_claimed
    FROM claude_jobs j JOIN tasks t ON t.id = j.task_id
    WINDOW w AS (PARTITION BY t.story_id ORDER BY j.created_at, j.id)
)
SELECT * FROM ordered WHERE claimed_at < previous_finished LIMIT 5
"""


@dataclass
class Tally:
    """What the workers reported: handler starts (c) and completions (d) per job."""

    started: Counter[str] = field(default_factory=Counter)
    done: Counter[str] = field(default_factory=Counter)
    last_done: float = 0.0
    drained: list[tuple[float, float]] = field(default_factory=list)  # (perf, cpu_s)
    complete: asyncio.Event = field(default_factory=asyncio.Event)


async def _collect(child: Child, tally: Tally, jobs: int, reactor: bool) -> None:
    while True:
        line = await child.lines.get()
        kind = line[0] if line else ""
        if kind == "c":
            tally.started[line[2]] += 1
        elif kind == "d":
            tally.done[line[2]] += 1
            tally.last_done = max(tally.last_done, float(line[1]))
            if reactor and len(tally.done) >= jobs:
                tally.complete.set()
        elif kind == "drained":
            tally.drained.append((float(line[1]), float(line[2])))
            return
        elif kind == "eof":
            raise RuntimeError(f"worker {child.name} exited early; see its log")


async def drain(
    server: Server,
    logs: Path,
    system: str,
    settings: str,
    workers: int,
    *,
    stories: int,
    tasks: int,
    slots: int,
    limit_s: float = 900,
) -> dict[str, Any]:
    jobs = stories * tasks
    label = f"{system}/{settings}/K={workers}"
    async with bench_database(server, "thr") as dsn:
        progress(f"throughput {label}: inserting {jobs} jobs")
        job_ids: list[str] = []
        if system in SCRUM4ME_SYSTEMS:
            world = await make_world(dsn, stories=stories, tasks=tasks)
            conn = await asyncpg.connect(dsn)
            try:
                job_ids = await insert_jobs(conn, world)
            finally:
                await conn.close()
            envs = []
            if system == "reactor":
                args = ["-m", "bench.reactor_worker", "--slots", str(slots), "--wait-for-go"]
                for index in range(workers):
                    home = logs / f"home-thr-{index}"
                    home.mkdir(exist_ok=True)
                    envs.append(reactor_env(world, str(home), f"bench-thr-{index}"))
            else:  # sqlfloor: the same statements without the reactor around them
                args = worker_args(system, dsn, "throughput", [
                    "--concurrency", str(slots), "--user", world.user_id,
                    "--token-id", world.token_id,
                ])  # fmt: skip
                envs = [{} for _ in range(workers)]
        else:
            await (fill_pgqueuer if system == "pgqueuer" else fill_procrastinate)(dsn, jobs)
            args = worker_args(system, dsn, "throughput", PEER_SETTINGS[system][settings])
            envs = [{} for _ in range(workers)]
        await prepare_database(dsn)
        await asyncio.sleep(1.0)
        async with Children() as children:
            started = [
                await children.start(
                    f"{system}-{index}",
                    [*args, "--instance", f"floor-{index}"] if system == "sqlfloor" else args,
                    env=envs[index],
                    log=logs / f"{system}-thr.log",
                )
                for index in range(workers)
            ]
            for child in started:
                await child.expect("ready", within=120)
            procs = [psutil.Process(child.pid) for child in started]
            cpu_before = [sum(p.cpu_times()[:2]) for p in procs]
            tally = Tally()
            collectors = [
                asyncio.create_task(_collect(child, tally, jobs, system in SCRUM4ME_SYSTEMS))
                for child in started
            ]
            machine_before = CpuSnapshot.take()
            progress(f"throughput {label}: go")
            t_go = time.perf_counter()
            for child in started:
                child.send("go")
            try:
                async with asyncio.timeout(limit_s):
                    if system in SCRUM4ME_SYSTEMS:
                        # Done at the last completion of any process. A collector that ends
                        # before that either raises (its worker died) or saw its worker
                        # drain (the SQL floor's processes stop one by one): keep waiting.
                        done_waiter = asyncio.create_task(tally.complete.wait())
                        waiting: set[asyncio.Task[Any]] = {done_waiter, *collectors}
                        while not tally.complete.is_set() and waiting - {done_waiter}:
                            finished, waiting = await asyncio.wait(
                                waiting, return_when=asyncio.FIRST_COMPLETED
                            )
                            for task in finished:
                                task.result()
                        done_waiter.cancel()
                        t_end = tally.last_done
                        cpu_after = [sum(p.cpu_times()[:2]) for p in procs]
                    else:
                        await asyncio.gather(*collectors)
                        t_end = max(perf for perf, _cpu in tally.drained)
                        cpu_after = [cpu for _perf, cpu in tally.drained]
            finally:
                for task in collectors:
                    task.cancel()
            machine = CpuSnapshot.take().since(machine_before)
        check = await _verify(system, dsn, jobs, job_ids, tally)
    elapsed = t_end - t_go
    worker_cpu = sum(cpu_after) - sum(cpu_before)
    busy = machine["machine_cpu_busy_pct"] - machine["cpu_steal_pct"]
    pg_cpu = max(busy / 100 * (psutil.cpu_count() or 1) * elapsed - worker_cpu, 0.0)
    return {
        "system": system,
        "settings": settings,
        "workers": workers,
        "jobs": jobs,
        "elapsed_s": round(elapsed, 3),
        "jobs_per_s": round(jobs / elapsed, 1),
        "worker_cpu_s": round(worker_cpu, 3),
        "worker_cpu_ms_per_job": round(worker_cpu / jobs * 1000, 3),
        "pg_cpu_ms_per_job_approx": round(pg_cpu / jobs * 1000, 3),
        **machine,
        **check,
    }


async def _verify(
    system: str, dsn: str, jobs: int, job_ids: list[str], tally: Tally
) -> dict[str, Any]:
    once = len(tally.started) == jobs and all(n == 1 for n in tally.started.values())
    result: dict[str, Any] = {"handled_once": once}
    if system in SCRUM4ME_SYSTEMS:
        once = once and set(tally.done) == set(job_ids) and all(n == 1 for n in tally.done.values())
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(_STORY_ORDER)
            assert row is not None
            if row["order_violations"]:
                for bad in await conn.fetch(_VIOLATIONS):
                    progress(f"story order violated: {dict(bad)}")
        finally:
            await conn.close()
        assert row is not None
        result.update(dict(row))
        result["handled_once"] = once
        result["verified"] = bool(
            once and row["done"] == jobs and row["retried"] == 0 and row["order_violations"] == 0
        )
    else:
        result.update(await verify_peer(system, dsn, jobs))
        result["verified"] = bool(once and result["db_ok"])
    return result


async def run(args: Any, server: Server, logs: Path) -> None:
    ks = [int(k) for k in args.workers.split(",")]
    for rep in range(args.repeat):
        for k in ks if rep % 2 == 0 else list(reversed(ks)):
            result = await drain(
                server,
                logs,
                "reactor",
                f"slots{args.slots}",
                k,
                stories=args.stories,
                tasks=args.tasks,
                slots=args.slots,
            )
            emit({"bench": "throughput", "repetition": rep + 1, **result})
