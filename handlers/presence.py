"""Worker presence: the claude_workers row the Scrum4Me NavBar counts."""

from __future__ import annotations

import os
from collections.abc import Sequence

from handlers.auth import Worker
from reactor.db import Database
from reactor.ids import new_cuid
from reactor.logs import get_logger
from reactor.sqlfiles import query

log = get_logger("reactor.presence")

_REGISTER = query("presence.register")
_UNREGISTER = query("presence.unregister")
_LIVE = query("presence.live_workers")

CAPABILITIES = ("code_edit", "planning", "review")


async def register(
    db: Database,
    worker: Worker,
    *,
    hostname: str,
    capabilities: Sequence[str] = CAPABILITIES,
    product_id: str | None = None,
) -> str:
    """Upsert this instance's presence row (and tell the UI); returns the row id."""
    row = await db.fetchrow(
        _REGISTER,
        new_cuid(),
        worker.user_id,
        worker.token_id,
        worker.instance_id,
        hostname[:255],
        os.getpid(),
        list(capabilities),
        product_id,
    )
    assert row is not None
    log.info("presence.registered", instance_id=worker.instance_id, worker_row=row["id"])
    return str(row["id"])


async def unregister(db: Database, worker: Worker) -> bool:
    row = await db.fetchrow(_UNREGISTER, worker.user_id, worker.token_id, worker.instance_id)
    removed = bool(row and row["removed"])
    log.info("presence.unregistered", instance_id=worker.instance_id, removed=removed)
    return removed


async def live_workers(
    db: Database, user_id: str | None, window_seconds: int = 30
) -> list[dict[str, object]]:
    rows = await db.fetch(_LIVE, user_id, window_seconds)
    return [
        {
            "instance_id": row["instance_id"],
            "hostname": row["hostname"],
            "pid": row["pid"],
            "runtime": row["runtime"],
            "last_seen_seconds_ago": round(row["seen_seconds_ago"], 1),
        }
        for row in rows
    ]
