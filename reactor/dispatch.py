"""Dispatch: one table from channel to handler, fed by the listener.

A channel has either a handler (a coroutine) or a reflex (a plain function). The listener's
callback may not block or raise. For a handler it only drops ``(channel, payload)`` into a
bounded in-memory inbox; one task drains the inbox, parses each payload and awaits the
handler. A reflex runs in the callback itself: it may only set flags (wake a claim pump),
and saves the enqueue-to-claim path a task switch through the inbox. If the inbox ever
fills, the notification is dropped and a sweep is requested instead, which finds the same
work by query.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from reactor import metrics
from reactor.events import Event, parse
from reactor.logs import get_logger

log = get_logger("reactor.dispatch")

Handler = Callable[[Event], Awaitable[None]]
Reflex = Callable[[Event], None]


class Dispatcher:
    def __init__(self, on_overflow: Callable[[], None], *, capacity: int = 10_000) -> None:
        self._handlers: dict[str, Handler] = {}
        self._reflexes: dict[str, Reflex] = {}
        self._send, self._receive = trio.open_memory_channel[tuple[str, str]](capacity)
        self._on_overflow = on_overflow
        self.processed = 0
        self._progress = trio.Event()

    def register(self, channel: str, handler: Handler) -> None:
        self._claim_channel(channel)
        self._handlers[channel] = handler

    def register_reflex(self, channel: str, reflex: Reflex) -> None:
        """A handler that runs inside the listener callback: sync, quick, flags only."""
        self._claim_channel(channel)
        self._reflexes[channel] = reflex

    def _claim_channel(self, channel: str) -> None:
        if channel in self._handlers or channel in self._reflexes:
            raise ValueError(f"a handler for channel {channel!r} is already registered")

    @property
    def channels(self) -> list[str]:
        return [*self._reflexes, *self._handlers]

    def deliver(self, channel: str, payload: str) -> None:
        """Called from the listener callback: never blocks, never raises."""
        reflex = self._reflexes.get(channel)
        if reflex is not None:
            self._react(channel, payload, reflex)
            return
        try:
            self._send.send_nowait((channel, payload))
        except trio.WouldBlock:
            metrics.NOTIFICATIONS_DROPPED.labels("inbox_full").inc()
            self._on_overflow()

    async def run(self) -> None:
        async for channel, payload in self._receive:
            await self._dispatch(channel, payload)
            self._processed_one()

    async def wait_processed(self, count: int) -> None:
        """Wait until ``count`` notifications have been handled in total (tests, demo)."""
        while self.processed < count:
            await self._progress.wait()

    def _processed_one(self) -> None:
        self.processed += 1
        self._progress.set()
        self._progress = trio.Event()

    def _react(self, channel: str, payload: str, reflex: Reflex) -> None:
        try:
            event = self._parse(channel, payload)
            if event is not None:
                reflex(event)
        except Exception:
            # Inside the listener callback nothing may escape (stack-wiring rule 6).
            log.exception("dispatch.handler_failed", channel=channel)
        self._processed_one()

    async def _dispatch(self, channel: str, payload: str) -> None:
        handler = self._handlers.get(channel)
        if handler is None:
            return
        event = self._parse(channel, payload)
        if event is None:
            return
        try:
            await handler(event)
        except Exception:
            # A failing handler must not stop the dispatcher; the sweep will retry the work.
            log.exception("dispatch.handler_failed", channel=channel)

    def _parse(self, channel: str, payload: str) -> Event | None:
        """The payload as an event; None when it is not for us or malformed (counted)."""
        metrics.NOTIFICATIONS.labels(channel).inc()
        try:
            return parse(channel, payload)
        except Exception as exc:  # anyone who can NOTIFY can send anything: never fatal
            metrics.NOTIFICATIONS_DROPPED.labels("malformed").inc()
            log.warning(
                "dispatch.payload_dropped", channel=channel, why=str(exc), size=len(payload)
            )
            return None
