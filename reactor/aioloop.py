"""The asyncio loop that asyncpg and uvicorn run on, inside the trio run (trio-asyncio).

trio-asyncio's default exception handler re-raises every error asyncio reports without a
task to give it to, inside the loop's nursery: the whole process goes down. Such reports
come from libraries tidying up, not from our code paths; the one seen here is asyncpg's
"Future exception was never retrieved: unexpected connection_lost() call" when a pooled
connection closes while the server drops it. A daemon must log those and live on: every
error that matters reaches trio through the awaited call it belongs to.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio_asyncio

from reactor.logs import get_logger

log = get_logger("reactor.asyncio")


@asynccontextmanager
async def open_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(log_stray_error)
        yield loop


def log_stray_error(_loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    exc = context.get("exception")
    log.warning(
        "asyncio.stray_error",
        report=str(context.get("message", "")),
        error=f"{type(exc).__name__}: {exc}" if exc is not None else None,
        why="reported by an asyncio library with nobody awaiting it; logged, not raised, so "
        "one stray error cannot stop the process",
    )
