"""The asyncio loop inside trio: a stray asyncio error is logged, never fatal."""

from __future__ import annotations

import asyncio
import gc

import pytest
import trio
import trio.testing
import trio_asyncio

from reactor import aioloop


async def drop_a_failed_future(loop: asyncio.AbstractEventLoop) -> None:
    """What asyncpg leaves behind when a connection is lost while it closes."""
    future = loop.create_future()
    future.set_exception(ConnectionError("unexpected connection_lost() call"))
    del future
    gc.collect()  # "Future exception was never retrieved" is reported from __del__
    await trio.testing.wait_all_tasks_blocked()


async def test_trio_asyncio_alone_would_let_a_stray_error_end_the_run() -> None:
    # The hazard this module exists for: the default handler raises it in the loop's nursery.
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio_asyncio.open_loop() as loop:
            await drop_a_failed_future(loop)
    assert caught.group_contains(ConnectionError)


async def test_a_stray_asyncio_error_is_logged_and_the_loop_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with aioloop.open_loop() as loop:
        await drop_a_failed_future(loop)
        assert await trio_asyncio.aio_as_trio(_answer)() == 42  # still serving
    strays = [r for r in caplog.records if r.getMessage() == "asyncio.stray_error"]
    assert len(strays) == 1
    assert "unexpected connection_lost() call" in str(strays[0].__dict__.get("error"))


async def _answer() -> int:
    return 42
