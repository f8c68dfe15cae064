"""Recovery after a lost listener: from pg_terminate_backend to the first claim after it.

Per sample: a seeded idle gap; T0 just before the listening backend of the reactor worker
is terminated; a job is enqueued right after (T1), while the listener is down, so only the
reconnect's catch-up sweep can find it (the safety sweep is set to 600 s); T2 is the claim
committed (the worker's offer()). Reported: T2 - T0 (kill to claim) and T2 - T1.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import CLOCK, Server, emit, percentiles, progress
from bench.latency import ReactorWorkerSystem, reactor_system
from bench.world import enqueue

_LISTENER = """
SELECT pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1
"""


async def _listener_pid(conn: asyncpg.Connection, name: str, within: float = 30.0) -> int:
    """The backend of the worker's LISTEN session, once it is (back) up."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pid = await conn.fetchval(_LISTENER, name)
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.005)
    raise RuntimeError(f"no backend named {name} within {within} s")


async def run(args: Any, server: Server, logs: Path) -> None:
    rng = random.Random(args.seed)
    kill_to_claim: list[float] = []
    enqueue_to_claim: list[float] = []
    # Only the reconnect's catch-up sweep may find the job: the periodic one is 600 s away.
    async with reactor_system(
        server, "worker", logs, extra_env={"REACTOR_SWEEP_SECONDS": "600"}
    ) as system:
        assert isinstance(system, ReactorWorkerSystem)
        conn, world, child = system.conn, system.world, system.child
        name = "reactor-listen:bench-worker"
        for index in range(args.warmup + args.samples):
            await asyncio.sleep(rng.uniform(0.2, 0.5))
            pid = await _listener_pid(conn, name)
            t0 = time.perf_counter()
            await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            t1 = time.perf_counter()
            job_id = await enqueue(conn, world, world.task_ids[0])
            line = await child.expect("c", within=30)
            if line[2] != job_id:
                raise RuntimeError(f"claimed {line[2]}, expected {job_id}")
            await child.expect("d", within=30)
            if index >= args.warmup:
                t2 = float(line[1])
                kill_to_claim.append((t2 - t0) * 1000)
                enqueue_to_claim.append((t2 - t1) * 1000)
            if (index + 1) % 10 == 0:
                progress(f"reconnect: {index + 1}/{args.warmup + args.samples} samples")
    emit(
        {
            "bench": "reconnect",
            "samples": args.samples,
            "warmup": args.warmup,
            "kill_to_claim_ms": percentiles(kill_to_claim),
            "enqueue_to_claim_ms": percentiles(enqueue_to_claim),
            "clock": CLOCK,
        }
    )
