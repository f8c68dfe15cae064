"""A counting TCP proxy in front of PostgreSQL: every statement a client sends, counted.

The idle benchmark points the reactor at this proxy (``sslmode=disable``, so the stream is
readable) and counts the frontend protocol messages it forwards: ``Q`` (a simple query:
asyncpg's pool-release reset, scripts) and ``E`` (an extended-protocol execute: every
prepared statement run). ``S`` (Sync) counts round trips of the extended protocol. Nothing is
changed or delayed beyond the copy itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from dataclasses import dataclass, field

_SSL_REQUEST = 80877103
_GSSENC_REQUEST = 80877104


@dataclass
class Counts:
    messages: Counter[str] = field(default_factory=Counter)
    connections: int = 0

    def snapshot(self) -> dict[str, int]:
        return {
            "simple_queries": self.messages["Q"],
            "executes": self.messages["E"],
            "syncs": self.messages["S"],
            "statements": self.messages["Q"] + self.messages["E"],
            "connections": self.connections,
        }


class CountingProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._host, self._port = upstream_host, upstream_port
        self.counts = Counts()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.counts.connections += 1
        up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        tasks = [
            asyncio.create_task(self._client_to_server(reader, up_writer)),
            asyncio.create_task(_copy(up_reader, writer)),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _client_to_server(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Untyped start-up messages first (SSLRequest / GSSENCRequest / StartupMessage).
        while True:
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            body = await reader.readexactly(length - 8)
            writer.write(head + body)
            await writer.drain()
            if code not in (_SSL_REQUEST, _GSSENC_REQUEST):
                break
        while True:
            head = await reader.readexactly(5)
            kind = chr(head[0])
            (length,) = struct.unpack("!i", head[1:])
            body = await reader.readexactly(length - 4)
            self.counts.messages[kind] += 1
            writer.write(head + body)
            await writer.drain()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
