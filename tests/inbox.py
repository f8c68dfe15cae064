"""Collect notifications in tests, on a real LISTEN session."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import trio

from reactor.db import Database, ListenSession
from reactor.sqlfiles import Query

_SENTINEL_CHANNEL = "reactor_test_sentinel"
_SEND = Query("test.notify", "SELECT pg_notify($1, $2)")


class Inbox:
    """Every notification on the given channels, in delivery order."""

    def __init__(self, dsn: str, channels: Sequence[str]) -> None:
        self._dsn = dsn
        self._channels = [*channels, _SENTINEL_CHANNEL]
        self._send, self._receive = trio.open_memory_channel[tuple[str, str]](100_000)
        self._session: ListenSession | None = None

    async def __aenter__(self) -> Inbox:
        self._session = await ListenSession.open(
            self._dsn, self._channels, self._on_notify, lambda: None, application_name="test-inbox"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()

    def _on_notify(self, channel: str, payload: str) -> None:
        self._send.send_nowait((channel, payload))

    async def next(self, wait: float = 5) -> tuple[str, dict[str, Any]]:
        with trio.fail_after(wait):
            channel, payload = await self._receive.receive()
        return channel, json.loads(payload)

    async def drain(self, db: Database, wait: float = 5) -> list[tuple[str, dict[str, Any]]]:
        """Everything delivered before a sentinel sent now (delivery follows commit order)."""
        marker = secrets.token_hex(8)
        await db.fetchval(_SEND, _SENTINEL_CHANNEL, json.dumps({"marker": marker}))
        received: list[tuple[str, dict[str, Any]]] = []
        while True:
            channel, payload = await self.next(wait)
            if channel == _SENTINEL_CHANNEL and payload.get("marker") == marker:
                return received
            if channel != _SENTINEL_CHANNEL:
                received.append((channel, payload))
