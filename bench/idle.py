"""Idle cost: statements per second and CPU of a reactor with nothing to do.

Method (pg_stat_statements is not loaded on a default server, so it cannot be relied on):
the reactor's DATABASE_URL points at bench.proxy, a counting TCP proxy in front of the
server, which counts every statement the process sends on every connection (pool, listener,
migrations check) - ``Q`` simple queries plus ``E`` extended-protocol executes - and the round
trips. As a cross-check, the ``xact_commit + xact_rollback`` delta of the bench database
(used by nothing else; read from another database) is reported too; it includes autovacuum
and lags by up to the stats flush interval. CPU: psutil user+system of the reactor process
over the same window. Counting starts 12 s after the process logged ``reactor.ready``
(past the stats flush interval).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil

from bench.common import Children, Server, bench_database, emit, progress
from bench.proxy import CountingProxy
from bench.world import make_world, reactor_env

_XACTS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1"
COMMANDS = {
    "daemon": ["-m", "reactor", "run"],
    "mcp": ["-m", "reactor", "mcp"],
    "worker": ["-m", "bench.reactor_worker", "--slots", "1"],
}


def _upstream(dsn: str) -> tuple[str, int]:
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    if "host" in query:  # embedded: a Unix socket directory
        raise SystemExit("idle needs a TCP server (pass --dsn postgresql://...@host:port/...)")
    return parts.hostname or "127.0.0.1", parts.port or 5432


async def _xacts(server: Server, database: str) -> int:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        return int(await conn.fetchval(_XACTS, database))
    finally:
        await conn.close()


def _logged_ready(log: Path) -> bool:
    return log.exists() and "reactor.ready" in log.read_text(errors="replace")


async def _wait_ready(log: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_logged_ready, log):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the reactor did not become ready; see {log}")


async def measure(server: Server, logs: Path, target: str, seconds: float) -> dict[str, Any]:
    host, port = _upstream(server.admin_dsn)
    proxy = CountingProxy(host, port)
    await proxy.start()
    try:
        async with bench_database(server, "idle") as dsn:
            world = await make_world(dsn)
            database = urlsplit(dsn).path.lstrip("/")
            world.dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}?sslmode=disable"
            home = logs / f"home-idle-{target}"
            home.mkdir(exist_ok=True)
            env = reactor_env(world, str(home), f"bench-idle-{target}")
            env["REACTOR_HEALTH_PORT"] = "0"
            log = logs / f"idle-{target}.log"
            async with Children() as children:
                child = await children.start(f"idle-{target}", COMMANDS[target], env=env, log=log)
                await _wait_ready(log)
                # Past the stats flush interval (10 s), so start-up work is not counted.
                await asyncio.sleep(12.0)
                proc = psutil.Process(child.pid)
                counts0, xacts0 = proxy.counts.snapshot(), await _xacts(server, database)
                cpu0, t0 = sum(proc.cpu_times()[:2]), time.perf_counter()
                progress(f"idle {target}: counting for {seconds:g} s")
                await asyncio.sleep(seconds)
                counts1, xacts1 = proxy.counts.snapshot(), await _xacts(server, database)
                cpu1, t1 = sum(proc.cpu_times()[:2]), time.perf_counter()
    finally:
        await proxy.close()
    window = t1 - t0
    delta = {key: counts1[key] - counts0[key] for key in counts1}
    return {
        "target": target,
        "seconds": round(window, 2),
        "statements": delta["statements"],
        "queries_per_s": round(delta["statements"] / window, 3),
        "round_trips_per_s": round((delta["syncs"] + delta["simple_queries"]) / window, 3),
        "simple_queries": delta["simple_queries"],
        "executes": delta["executes"],
        "new_connections": delta["connections"],
        "db_xacts_per_s": round((xacts1 - xacts0) / window, 3),
        "cpu_s": round(cpu1 - cpu0, 3),
        "cpu_pct": round(100 * (cpu1 - cpu0) / window, 3),
        "method": "counting proxy (Q + E messages); db_xacts from pg_stat_database",
    }


async def run(args: Any, server: Server, logs: Path) -> None:
    for rep in range(args.repeat):
        for target in args.target.split(","):
            result = await measure(server, logs, target, args.seconds)
            emit({"bench": "idle", "repetition": rep + 1, **result})
