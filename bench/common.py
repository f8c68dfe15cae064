"""Shared plumbing: the server, throwaway databases, child processes, statistics, output.

The parent process of every benchmark runs on plain asyncio with asyncpg (it plays the
Scrum4Me app, which writes through Prisma, not through the reactor). Workers run in child
processes (bench.reactor_worker, bench.peers) that talk to the parent over pipes: one line per
event on their stdout, commands on their stdin, and they exit when their stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
_IDENT = re.compile(r"^bench_[a-z0-9_]{1,50}$")
CLOCK = "time.perf_counter (CLOCK_MONOTONIC, shared by all processes)"


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    """One JSON line per result on stdout (with the 1-minute load average at that moment)."""
    line = {**result, "loadavg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(line, default=str), flush=True)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max with linear interpolation between closest ranks."""
    data = sorted(values)
    if not data:
        return {}

    def pct(p: float) -> float:
        pos = (len(data) - 1) * p / 100
        low = int(pos)
        high = min(low + 1, len(data) - 1)
        return data[low] + (data[high] - data[low]) * (pos - low)

    return {
        "p50": round(pct(50), 3),
        "p95": round(pct(95), 3),
        "p99": round(pct(99), 3),
        "max": round(data[-1], 3),
        "min": round(data[0], 3),
        "mean": round(sum(data) / len(data), 3),
    }


def median(values: Sequence[float]) -> float:
    return percentiles(values)["p50"] if values else float("nan")


def dsn_for(admin_dsn: str, database: str) -> str:
    parts = urlsplit(admin_dsn)
    return urlunsplit(parts._replace(path="/" + database))


def check_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"unsafe database name {name!r}")
    return name


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    admin_dsn: str
    embedded: bool
    version: str = ""


async def _answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def find_server(dsn: str | None) -> Server:
    """--dsn if given; else the local server if it answers; else an embedded one."""
    if dsn is None and not await _answers(DEFAULT_DSN):
        from reactor import embedded

        data_dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        progress(f"no server on {DEFAULT_DSN}: starting an embedded one in {data_dir}")
        started = await asyncio.to_thread(embedded.start, data_dir)
        server = Server(started.dsn("postgres"), embedded=True)
    else:
        server = Server(dsn or DEFAULT_DSN, embedded=False)
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        server.version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
    return server


async def _admin(server: Server, sql: str) -> None:
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def bench_database(server: Server, label: str) -> AsyncIterator[str]:
    """CREATE DATABASE bench_<label>_<random>; dropped (FORCE) on the way out."""
    name = check_ident(f"bench_{label}_{uuid.uuid4().hex[:10]}")
    await _admin(server, f'CREATE DATABASE "{name}"')
    try:
        yield dsn_for(server.admin_dsn, name)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def prepare_database(dsn: str) -> None:
    """VACUUM ANALYZE and CHECKPOINT before timing (peer-figures' protocol)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


# ---------------------------------------------------------------- CPU


@dataclass(frozen=True)
class CpuSnapshot:
    total: int
    idle: int
    steal: int

    @classmethod
    def take(cls) -> CpuSnapshot:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal guest guest_nice (guest* in user)
        total = sum(fields[:8])
        return cls(total, fields[3] + fields[4], fields[7])

    def since(self, earlier: CpuSnapshot) -> dict[str, float]:
        total = max(self.total - earlier.total, 1)
        idle = self.idle - earlier.idle
        steal = self.steal - earlier.steal
        return {
            "machine_cpu_busy_pct": round(100 * (total - idle) / total, 1),
            "cpu_steal_pct": round(100 * steal / total, 1),
        }


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


# ---------------------------------------------------------------- children


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the parent dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Child:
    """A worker process: lines from its stdout go to ``lines``; ``send`` writes its stdin."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.lines: asyncio.Queue[list[str]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, name: str, args: Sequence[str], *, env: dict[str, str] | None, log: Path
    ) -> Child:
        with log.open("ab") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                preexec_fn=_die_with_parent,
                limit=1 << 20,
            )
        return cls(name, proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                await self.lines.put(["eof"])
                return
            await self.lines.put(raw.decode().split())

    async def expect(self, kind: str, within: float = 60) -> list[str]:
        """The next line of ``kind`` (lines of other kinds before it are dropped)."""
        async with asyncio.timeout(within):
            while True:
                line = await self.lines.get()
                if line and line[0] == kind:
                    return line
                if line == ["eof"]:
                    raise RuntimeError(
                        f"worker {self.name} exited (status {await self.proc.wait()}) "
                        f"while waiting for {kind!r}; see its log"
                    )

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self, grace: float = 5.0) -> None:
        """Close stdin (the child's signal to exit), then SIGTERM, then SIGKILL."""
        proc = self.proc
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
        for sig, wait in ((None, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if proc.returncode is not None:
                break
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), wait)
        self._reader.cancel()


class Children:
    """Every child started inside is stopped on the way out, whatever happened."""

    def __init__(self) -> None:
        self.all: list[Child] = []

    async def start(
        self, name: str, args: Sequence[str], *, env: dict[str, str] | None, log: Path
    ) -> Child:
        child = await Child.start(name, args, env=env, log=log)
        self.all.append(child)
        return child

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.shield(asyncio.gather(*(child.stop() for child in self.all)))


def run_checked(args: Sequence[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        list(args),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout


def work_dir() -> Path:
    """Logs and scratch files of this run (kept for inspection)."""
    path = Path(tempfile.gettempdir()) / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path
