"""`reactor status`: queue per product, live workers, recent jobs; as a table or JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from handlers.presence import live_workers
from reactor.db import Database
from reactor.sqlfiles import query

_QUEUE = query("status.queue_by_product")
_RECENT = query("status.recent_jobs")


async def collect(db: Database, user_id: str | None, limit: int) -> dict[str, Any]:
    queue = [dict(row) for row in await db.fetch(_QUEUE, user_id)]
    recent = [dict(row) for row in await db.fetch(_RECENT, user_id, limit)]
    return {
        "queue": [_jsonable(row) for row in queue],
        "workers": await live_workers(db, user_id),
        "recent_jobs": [_jsonable(row) for row in recent],
    }


def render(report: dict[str, Any]) -> str:
    lines = ["Queue (QUEUED / CLAIMED / RUNNING per product)"]
    queue = report["queue"]
    lines += _table(
        ["product", "queued", "claimed", "running", "oldest queued"],
        [
            [r["product"], r["queued"], r["claimed"], r["running"], r["oldest_queued"] or "-"]
            for r in queue
        ],
        empty="  (no active jobs)",
    )
    lines += ["", "Live workers (seen in the last 30 s)"]
    lines += _table(
        ["instance", "host", "pid", "seen"],
        [
            [
                w["instance_id"],
                w["hostname"] or "-",
                w["pid"] or "-",
                f"{w['last_seen_seconds_ago']}s ago",
            ]
            for w in report["workers"]
        ],
        empty="  (none)",
    )
    lines += ["", "Recent jobs"]
    lines += _table(
        ["job", "status", "kind", "product", "task", "waited", "worked", "instance"],
        [
            [
                r["id"],
                r["status"],
                r["kind"],
                r["product"],
                _cut(r["task"] or "-", 32),
                _duration(r["wait_seconds"]),
                _duration(r["work_seconds"]),
                r["worker_instance_id"] or "-",
            ]
            for r in report["recent_jobs"]
        ],
        empty="  (no jobs yet)",
    )
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[Any]], *, empty: str) -> list[str]:
    if not rows:
        return [empty]
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    out = [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    out.insert(1, "  " + "  ".join("-" * width for width in widths))
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: (f"{value.isoformat()}Z" if isinstance(value, datetime) else value)
        for key, value in row.items()
    }
