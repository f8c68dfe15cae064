"""Serving an ASGI app with uvicorn inside the trio run (through trio-asyncio).

Each rule here prevents a hang or a leak measured in reference/stack-wiring.md:
- we bind the socket ourselves (rule 4): when uvicorn fails to bind it calls sys.exit inside
  an asyncio task, which hangs the whole trio run;
- the app is built on the asyncio side (rule 2): anyio primitives bind to the backend that
  is running when they are created;
- uvicorn is never cancelled, only told to exit (rule 3): cancelling leaks the listening
  socket; a shielded task turns a trio cancellation into ``should_exit``;
- trio owns the signals (rule 5), so uvicorn's handler installation is disabled;
- graceful shutdown is bounded (rule 8): an open MCP stream would otherwise hold it forever.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio
import uvicorn
from trio_asyncio import aio_as_trio

from reactor.logs import get_logger

log = get_logger("reactor.http")

AppFactory = Callable[[], Awaitable[Any]]


class HttpBindError(Exception):
    """The HTTP port could not be bound; the message names the setting to change."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), reuse_port=False)
    except OSError as exc:
        raise HttpBindError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc}). Another process may use "
            "the port: stop it, or set REACTOR_HEALTH_PORT (and REACTOR_HTTP_HOST) to a free one."
        ) from exc
    sock.setblocking(False)
    return sock


async def serve(
    app_factory: AppFactory,
    sock: socket.socket,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; ``started`` reports the bound port once uvicorn accepts."""
    app = await aio_as_trio(app_factory)()
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=3
    )
    server = _Server(config)
    done = trio.Event()
    failure: list[BaseException] = []

    async def run_uvicorn() -> None:
        with trio.CancelScope(shield=True):
            try:
                await aio_as_trio(server.serve)([sock])
            except BaseException as exc:
                failure.append(exc)
            finally:
                done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_uvicorn)
        # Whatever ends this task (a cancellation while uvicorn is still starting included),
        # uvicorn must be told to exit: its task is shielded and would otherwise run forever.
        try:
            while not server.started:
                if done.is_set():
                    raise RuntimeError(f"the HTTP server stopped while starting: {failure[:1]}")
                await trio.sleep(0.01)
            port = int(sock.getsockname()[1])
            log.info("http.listening", address=f"{sock.getsockname()[0]}:{port}")
            task_status.started(port)
            await done.wait()
        finally:
            server.should_exit = True
