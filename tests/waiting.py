"""Waiting in tests without fixed sleeps."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import trio


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    """Poll a condition that has no event to wait on (another process, a database row).

    Fails the test after ``within`` seconds; returns as soon as the condition holds.
    """
    with trio.fail_after(within):
        while True:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(0.02)
