"""The daemon's HTTP surface: /health, /metrics and /mcp (streamable HTTP) on one port.

Route handlers run on the asyncio side (uvicorn); they reach the trio-side reactor through
``trio_as_aio``. /mcp requires ``Authorization: Bearer <token>`` (the same sha256 lookup as
SCRUM4ME_TOKEN); /health and /metrics are open and never contain a secret.
"""

from __future__ import annotations

import json
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from trio_asyncio import trio_as_aio

from handlers import presence
from handlers.auth import AuthError, Worker
from handlers.errors import PermissionDenied
from reactor import metrics
from reactor.db import DatabaseError
from reactor.health import AgentStats, health_report
from reactor.http import AppFactory
from reactor.logs import get_logger
from reactor.mcp_tools import ReactorMCP, WorkerSource
from reactor.runtime import Reactor
from reactor.tokens import INSTANCE_HEADER, TokenCache, bearer_token

log = get_logger("reactor.web")

IDLE_AFTER_SECONDS = 60.0


def http_worker_source(tokens: TokenCache) -> WorkerSource:
    async def source(ctx: Any) -> Worker:
        headers = ctx.headers if ctx is not None else None
        token = bearer_token(headers)
        if token is None:
            raise PermissionDenied("Authorization: Bearer <Scrum4Me API token> is required")
        try:
            return await tokens.worker(token, (headers or {}).get(INSTANCE_HEADER))
        except AuthError as exc:
            raise PermissionDenied(str(exc)) from None

    return source


class HttpPresence:
    """claude_workers rows for MCP-over-HTTP callers, alive while they make requests."""

    def __init__(self, reactor: Reactor, *, idle_after: float = IDLE_AFTER_SECONDS) -> None:
        self._reactor = reactor
        self._idle_after = idle_after
        self._active: dict[tuple[str, str], int] = {}
        self._seen: dict[tuple[str, str], float] = {}
        self._workers: dict[tuple[str, str], Worker] = {}
        self._registered: set[tuple[str, str]] = set()
        self._new = trio.Event()

    def begin(self, worker: Worker) -> None:
        key = (worker.token_id, worker.instance_id)
        if key == (self._reactor.worker.token_id, self._reactor.worker.instance_id):
            return  # the daemon's own identity already has a row
        self._workers[key] = worker
        self._active[key] = self._active.get(key, 0) + 1
        self._seen[key] = trio.current_time()
        if key not in self._registered:
            self._new.set()

    def end(self, worker: Worker) -> None:
        key = (worker.token_id, worker.instance_id)
        if key in self._active:
            self._active[key] -= 1
            self._seen[key] = trio.current_time()

    async def unregister_at_exit(self) -> None:
        """Wait for cancellation (shutdown), then remove the HTTP callers' presence rows."""
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for key in list(self._registered):
                    try:
                        await presence.unregister(self._reactor.db, self._workers[key])
                    except DatabaseError as exc:
                        log.warning("presence.http_unregister_failed", why=str(exc))

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self._reactor.settings.presence_seconds):
                await self._new.wait()
            self._new = trio.Event()
            try:
                await self._tick()
            except DatabaseError as exc:
                log.warning("presence.http_tick_failed", why=str(exc))

    async def _tick(self) -> None:
        db, now = self._reactor.db, trio.current_time()
        for key, worker in list(self._workers.items()):
            idle = (
                self._active.get(key, 0) <= 0 and now - self._seen.get(key, now) >= self._idle_after
            )
            if idle:
                self._reactor.forget_pump(worker)
                if key in self._registered:
                    await presence.unregister(db, worker)
                self._workers.pop(key, None)
                self._active.pop(key, None)
                self._seen.pop(key, None)
                self._registered.discard(key)
            else:
                # An upsert: registers a newcomer and refreshes last_seen_at of the others.
                await presence.register(db, worker, hostname=f"http:{worker.instance_id}")
                self._registered.add(key)


class Front:
    """The daemon's ASGI entry: /health and /metrics, then /mcp behind a Bearer token check."""

    def __init__(
        self,
        app: ASGIApp,
        reactor: Reactor,
        agents: AgentStats,
        tokens: TokenCache,
        people: HttpPresence,
    ) -> None:
        self._app = app
        self._reactor = reactor
        self._agents = agents
        self._tokens = tokens
        self._presence = people

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path in ("/health", "/metrics") and scope.get("method") in ("GET", "HEAD"):
            await self._observe(path)(scope, receive, send)
            return
        if not path.startswith("/mcp"):
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = bearer_token(dict(headers))
        if token is None:
            await _refuse(
                scope, receive, send, "Authorization: Bearer <Scrum4Me API token> is required."
            )
            return
        try:
            worker = await trio_as_aio(self._tokens.worker)(token, headers.get(INSTANCE_HEADER))
        except AuthError as exc:
            await _refuse(scope, receive, send, str(exc))
            return
        except DatabaseError as exc:
            response = JSONResponse(
                {"error": "database unavailable", "message": str(exc)}, status_code=503
            )
            await response(scope, receive, send)
            return
        self._presence.begin(worker)
        try:
            await self._app(scope, receive, send)
        finally:
            self._presence.end(worker)

    def _observe(self, path: str) -> ASGIApp:
        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            status, body = await trio_as_aio(health_report)(self._reactor, self._agents)
            if path == "/health":
                response = Response(
                    json.dumps(body, indent=2), status_code=status, media_type="application/json"
                )
            else:  # the health report has just refreshed the gauges
                response = Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
            await response(scope, receive, send)

        return respond


async def _refuse(scope: Scope, receive: Receive, send: Send, message: str) -> None:
    response = JSONResponse(
        {"error": "unauthorized", "message": message},
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer realm="scrum4me"'},
    )
    await response(scope, receive, send)


def build_app_factory(
    reactor: Reactor,
    server: ReactorMCP,
    agents: AgentStats,
    tokens: TokenCache,
    people: HttpPresence,
) -> AppFactory:
    """The factory ``http.serve`` runs on the asyncio side (stack-wiring rule 2)."""

    async def factory() -> ASGIApp:
        app = server.streamable_http_app(
            streamable_http_path="/mcp", host=reactor.settings.http_host
        )
        return Front(app, reactor, agents, tokens, people)

    return factory
