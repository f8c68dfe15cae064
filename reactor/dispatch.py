"""Dispatch: one table from channel to handler, fed by the listener.

The listener's callback may not block or raise, so it only drops ``(channel, payload)`` into
a bounded in-memory inbox. One task drains the inbox, parses each payload and awaits the
channel's handler. Handlers are quick: they set wake-up flags or start work in the
reactor's nursery. If the inbox ever fills, the notification is dropped and a sweep is
requested instead, which finds the same work by query.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from reactor import metrics
from reactor.events import Event, parse
from reactor.logs import get_logger

log = get_logger("reactor.dispatch")

Handler = Callable[[Event], Awaitable[None]]


class Dispatcher:
    def __init__(self, on_overflow: Callable[[], None], *, capacity: int = 10_000) -> None:
        self._handlers: dict[str, Handler] = {}
        self._send, self._receive = trio.open_memory_channel[tuple[str, str]](capacity)
        self._on_overflow = on_overflow
        self.processed = 0
        self._progress = trio.Event()

    def register(self, channel: str, handler: Handler) -> None:
        if channel in self._handlers:
            raise ValueError(f"a handler for channel {channel!r} is already registered")
        self._handlers[channel] = handler

    @property
    def channels(self) -> list[str]:
        return list(self._handlers)

    def deliver(self, channel: str, payload: str) -> None:
        """Called from the listener callback: never blocks, never raises."""
        try:
            self._send.send_nowait((channel, payload))
        except trio.WouldBlock:
            metrics.NOTIFICATIONS_DROPPED.labels("inbox_full").inc()
            self._on_overflow()

    async def run(self) -> None:
        async for channel, payload in self._receive:
            await self._dispatch(channel, payload)
            self.processed += 1
            self._progress.set()
            self._progress = trio.Event()

    async def wait_processed(self, count: int) -> None:
        """Wait until ``count`` notifications have been handled in total (tests, demo)."""
        while self.processed < count:
            await self._progress.wait()

    async def _dispatch(self, channel: str, payload: str) -> None:
        metrics.NOTIFICATIONS.labels(channel).inc()
        handler = self._handlers.get(channel)
        if handler is None:
            return
        try:
            event = parse(channel, payload)
        except Exception as exc:  # anyone who can NOTIFY can send anything: never fatal
            metrics.NOTIFICATIONS_DROPPED.labels("malformed").inc()
            log.warning(
                "dispatch.payload_dropped", channel=channel, why=str(exc), size=len(payload)
            )
            return
        if event is None:
            return
        try:
            await handler(event)
        except Exception:
            # A failing handler must not stop the dispatcher; the sweep will retry the work.
            log.exception("dispatch.handler_failed", channel=channel)
