"""Sequential pickup latency: enqueue one job, wait until a worker has it, repeat.

Per sample (peer-figures' method): sleep a seeded random idle gap; T0 just before the enqueue
call; T1 when it returns; T2 reported by the worker (``time.perf_counter``, CLOCK_MONOTONIC,
one clock for every process on the machine). The next job is enqueued only after T2 and the
job's completion. Reported: T2 - T0 (p50/p95/p99/max), T1 - T0 (``enqueue_call_ms``) and
T2 - T1 (``commit_to_claim_ms``: the issue's "commit -> claim").
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from mcp import Client, StdioServerParameters

from bench.common import (
    CLOCK,
    Children,
    Server,
    bench_database,
    emit,
    percentiles,
    prepare_database,
    progress,
)
from bench.world import World, enqueue, make_world, reactor_env


class LatencySystem(Protocol):
    name: str

    async def enqueue(self) -> str: ...

    async def pickup(self, job_id: str) -> float:
        """T2 of ``job_id`` (perf_counter when the worker had it)."""
        ...

    async def settle(self, job_id: str) -> None:
        """Wait (off the timed path) until the job is finished, so the next one is alone."""
        ...


async def measure(
    system: LatencySystem,
    *,
    samples: int,
    warmup: int,
    gap_ms: tuple[float, float],
    seed: int,
    limit_s: float = 30.0,
) -> dict[str, Any]:
    rng = random.Random(seed)
    total, enq, commit = [], [], []
    for index in range(warmup + samples):
        await asyncio.sleep(rng.uniform(*gap_ms) / 1000)
        t0 = time.perf_counter()
        job_id = await system.enqueue()
        t1 = time.perf_counter()
        t2 = await asyncio.wait_for(system.pickup(job_id), limit_s)
        await asyncio.wait_for(system.settle(job_id), limit_s)
        if index >= warmup:
            total.append((t2 - t0) * 1000)
            enq.append((t1 - t0) * 1000)
            commit.append((t2 - t1) * 1000)
        if (index + 1) % 100 == 0:
            progress(f"{system.name}: {index + 1}/{warmup + samples} samples")
    result: dict[str, Any] = {"samples": samples, "warmup": warmup, "gap_ms": list(gap_ms)}
    result.update({f"{k}_ms": v for k, v in percentiles(total).items()})
    result["enqueue_call_ms_p50"] = percentiles(enq)["p50"]
    result["commit_to_claim_ms"] = percentiles(commit)
    result["clock"] = CLOCK
    return result


async def settle_database(dsn: str) -> None:
    await prepare_database(dsn)
    await asyncio.sleep(1.0)


# ---------------------------------------------------------------- the reactor


class ReactorWorkerSystem:
    """(a) T2 = offer() in a child running Reactor (the claim has committed)."""

    name = "reactor"

    def __init__(self, world: World, conn: asyncpg.Connection, child: Any) -> None:
        self.world, self.conn, self.child = world, conn, child
        self.task_id = world.task_ids[0]

    async def enqueue(self) -> str:
        return await enqueue(self.conn, self.world, self.task_id)

    async def pickup(self, job_id: str) -> float:
        line = await self.child.expect("c")
        if line[2] != job_id:
            raise RuntimeError(f"reactor claimed {line[2]}, expected {job_id}")
        return float(line[1])

    async def settle(self, job_id: str) -> None:
        await self.child.expect("d")


class ReactorMcpSystem:
    """(b) T2 = the wait_for_job result received by an MCP client over stdio."""

    name = "reactor-mcp"

    def __init__(self, world: World, conn: asyncpg.Connection, client: Client) -> None:
        self.world, self.conn, self.client = world, conn, client
        self.task_id = world.task_ids[0]
        self.pending: asyncio.Task[tuple[float, dict[str, Any]]] | None = None

    async def _wait(self) -> tuple[float, dict[str, Any]]:
        while True:
            result = await self.client.call_tool("wait_for_job", {"wait_seconds": 600})
            t2 = time.perf_counter()
            data = result.structured_content or {}
            if result.is_error:
                raise RuntimeError(f"wait_for_job failed: {result.content}")
            if data.get("status") != "timeout":
                return t2, data

    def arm(self) -> None:
        self.pending = asyncio.create_task(self._wait())

    async def enqueue(self) -> str:
        return await enqueue(self.conn, self.world, self.task_id)

    async def pickup(self, job_id: str) -> float:
        assert self.pending is not None
        t2, data = await self.pending
        if data.get("job_id") != job_id:
            raise RuntimeError(f"wait_for_job returned {data.get('job_id')}, expected {job_id}")
        return t2

    async def settle(self, job_id: str) -> None:
        result = await self.client.call_tool(
            "update_job_status", {"job_id": job_id, "status": "done"}
        )
        if result.is_error:
            raise RuntimeError(f"update_job_status failed: {result.content}")
        self.arm()


@asynccontextmanager
async def reactor_system(
    server: Server, mode: str, logs: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[ReactorWorkerSystem | ReactorMcpSystem]:
    """A fresh database, its world, and the worker (child process or MCP server)."""
    async with bench_database(server, "lat") as dsn:
        world = await make_world(dsn)
        home = logs / f"home-{mode}"
        home.mkdir(exist_ok=True)
        env = {**reactor_env(world, str(home), f"bench-{mode}"), **(extra_env or {})}
        conn = await asyncpg.connect(dsn)
        try:
            await settle_database(dsn)
            if mode == "worker":
                async with Children() as children:
                    child = await children.start(
                        "reactor",
                        ["-m", "bench.reactor_worker", "--slots", "1"],
                        env=env,
                        log=logs / "reactor-latency.log",
                    )
                    await child.expect("ready")
                    yield ReactorWorkerSystem(world, conn, child)
            else:
                log = logs / "reactor-mcp.log"
                params = StdioServerParameters(
                    command="/bin/sh",
                    args=["-c", f'exec "{sys.executable}" -m reactor mcp 2>>"{log}"'],
                    env=env,
                )
                async with Client(params, read_timeout_seconds=700) as client:
                    system = ReactorMcpSystem(world, conn, client)
                    system.arm()
                    try:
                        yield system
                    finally:
                        if system.pending is not None:
                            system.pending.cancel()
        finally:
            await conn.close()


async def run(args: Any, server: Server, logs: Path) -> None:
    modes = args.mode.split(",")
    for rep in range(args.repeat):
        for mode in modes if rep % 2 == 0 else list(reversed(modes)):
            progress(f"latency {mode}: repetition {rep + 1}/{args.repeat}")
            async with reactor_system(server, mode, logs) as system:
                result = await measure(
                    system,
                    samples=args.samples,
                    warmup=args.warmup,
                    gap_ms=(50, 250),
                    seed=args.seed,
                )
            emit({"bench": "latency", "system": system.name, "repetition": rep + 1, **result})
