"""Composition root: open the database, authenticate, and run ``reactor run`` or ``reactor mcp``.

One nursery owns every long-lived task; SIGTERM/SIGINT (and stdin EOF for ``mcp``) end it
cleanly: stop claiming, let running agents finish within the grace period, unregister presence.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from handlers.auth import AuthError, Worker, authenticate
from handlers.errors import PermissionDenied
from handlers.workspace import Workspace
from reactor import aioloop, embedded, http
from reactor.agent import AgentSlots
from reactor.config import Settings
from reactor.db import Database
from reactor.health import AgentStats
from reactor.jobflow import CleanupService
from reactor.logs import get_logger
from reactor.mcp_tools import ToolHost, build_server
from reactor.migrate import MigrateReport, check_schema, migrate
from reactor.runtime import Reactor
from reactor.sqlfiles import query
from reactor.tokens import TokenCache
from reactor.web import HttpPresence, build_app_factory, http_worker_source

log = get_logger("reactor.app")


@dataclass(frozen=True)
class Opened:
    settings: Settings
    db: Database
    embedded: bool


def check_import_order() -> None:
    """Stack-wiring rule 1, verified at start-up rather than discovered as a hang."""
    from anyio._backends import _asyncio as anyio_asyncio

    if getattr(anyio_asyncio, "get_running_loop", None) is not asyncio.get_running_loop:
        raise RuntimeError(
            "anyio's asyncio backend was imported before trio_asyncio; import reactor (or "
            "trio_asyncio) first. Under pytest, run with -p trio_asyncio."
        )


async def start_embedded(
    settings: Settings, *, on_migrated: Callable[[MigrateReport], None] | None = None
) -> Settings:
    """Start (or reuse) the embedded server and point the settings at its migrated database.

    ``on_migrated`` receives what migrating it did (``reactor migrate`` reports it).
    """
    log.info("embedded.starting", data_dir=str(settings.data_dir), why="DATABASE_URL is not set")
    dsn = await embedded_database(settings, demo=False, on_migrated=on_migrated)
    log.info("embedded.database", dsn=dsn, why="using the embedded default")
    return settings.with_overrides(database_url=dsn)


async def embedded_database(
    settings: Settings,
    *,
    demo: bool,
    on_migrated: Callable[[MigrateReport], None] | None = None,
) -> str:
    """A migrated database (with the app schema) on the embedded server; returns its DSN.

    ``demo`` uses the demo's own database, dropped and created fresh every time; otherwise
    the app database, created once and then reused. ``on_migrated`` receives the report of
    the migration (the app schema created or found, the migrations applied).
    """
    server = await trio.to_thread.run_sync(embedded.start, settings.data_dir)
    name = embedded.DEMO_DATABASE if demo else embedded.APP_DATABASE
    admin = await Database.connect(
        server.dsn("postgres"), max_size=1, application_name="reactor-admin"
    )
    try:
        if demo:
            await admin.execute(query("admin.drop_demo_database"))
            await admin.execute(query("admin.create_demo_database"))
        elif not await admin.fetchval(query("admin.database_exists"), name):
            await admin.execute(query("admin.create_app_database"))
    finally:
        await admin.close()
    dsn = server.dsn(name)
    db = await Database.connect(dsn, max_size=2, application_name="reactor-migrate")
    try:
        report = await migrate(db, with_app_schema=True)
    finally:
        await db.close()
    if on_migrated is not None:
        on_migrated(report)
    return dsn


async def open_database(settings: Settings, *, role: str) -> Opened:
    is_embedded = settings.database_url is None
    if is_embedded:
        settings = await start_embedded(settings)
    settings.require_listen_url()  # refuse a pooler for LISTEN before anything starts
    assert settings.database_url is not None
    db = await Database.connect(
        settings.database_url, max_size=settings.pool_size, application_name=f"reactor-{role}"
    )
    try:
        await check_schema(db)
    except BaseException:
        await db.close()
        raise
    return Opened(settings, db, is_embedded)


async def authenticate_token(db: Database, settings: Settings, role: str) -> Worker:
    worker = await authenticate(
        db, settings.require_token(), settings.instance_for(role), source="SCRUM4ME_TOKEN"
    )
    if worker.is_demo:
        raise AuthError(
            "SCRUM4ME_TOKEN belongs to a demo account, which cannot claim jobs.", "demo"
        )
    return worker


@dataclass
class StopSwitch:
    """What a signal does: abandon start-up, or, once the reactor runs, stop in order.

    ``graceful`` turns true the moment the reactor is listening with its presence row
    written; from then on a signal must drain agents and unregister, even if /health is not
    served yet (a SIGTERM can arrive in between: docker stop right after start)."""

    stop: trio.Event = field(default_factory=trio.Event)
    graceful: bool = False


@dataclass
class Daemon:
    """A running daemon: what the demo and the tests look at, and how to stop it."""

    reactor: Reactor
    slots: AgentSlots | None
    port: int
    stats: AgentStats
    stop: trio.Event
    stopped: trio.Event


async def run_daemon(settings: Settings) -> None:
    check_import_order()
    # Signals are taken over before anything starts: a SIGTERM during start-up (docker stop
    # right after the container turned healthy) must shut down in order, not kill the process
    # with its presence row left behind.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with aioloop.open_loop(), trio.open_nursery() as nursery:
            switch = StopSwitch()
            nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope, switch)
            opened = await open_database(settings, role="daemon")
            try:
                daemon = await nursery.start(
                    partial(serve_daemon, opened.settings, opened.db, switch=switch)
                )
                settle_memory()
                await daemon.stopped.wait()
                nursery.cancel_scope.cancel()
            finally:
                await opened.db.close()


async def _stop_on_signal(
    signals: AsyncIterator[int], startup: trio.CancelScope, switch: StopSwitch
) -> None:
    """First signal: a graceful stop once the reactor runs, or abandon start-up before that."""
    async for signum in signals:
        log.info(
            "daemon.stopping",
            signal=signal.Signals(signum).name,
            why="shutdown requested" + ("" if switch.graceful else " during start-up"),
        )
        if switch.graceful:
            switch.stop.set()
        else:
            startup.cancel()
        return


async def serve_daemon(
    settings: Settings,
    db: Database,
    *,
    switch: StopSwitch | None = None,
    task_status: trio.TaskStatus[Daemon] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listener, pump, agent slots, HTTP; returns after ``stop`` is set and shutdown is done."""
    switch = switch or StopSwitch()
    worker = await authenticate_token(db, settings, "reactor")
    sock = http.bind(settings.http_host, settings.http_port)
    ws = Workspace.from_settings(settings)
    reactor = Reactor(settings, db, worker, role="daemon")
    cleanup = CleanupService(reactor, ws)
    stats = AgentStats()
    tokens = TokenCache(db)
    people = HttpPresence(reactor)
    server = build_server(ToolHost(reactor, ws, http_worker_source(tokens)))
    factory = build_app_factory(reactor, server, stats, tokens, people)
    async with trio.open_nursery() as nursery:
        await nursery.start(reactor.run)
        switch.graceful = True
        slots = None
        if settings.agent_command:
            slots = AgentSlots(reactor, ws, settings.agent_command, stats, cleanup)
            reactor.pump.add(slots)
        nursery.start_soon(people.run)
        nursery.start_soon(people.unregister_at_exit)
        port = await nursery.start(http.serve, factory, sock)
        log.info(
            "daemon.ready",
            port=port,
            concurrency=settings.concurrency if slots else 0,
            why="serving /health, /metrics and /mcp"
            + (
                "; launching the agent for each claimed job"
                if slots
                else "; MCP clients do the work"
            ),
        )
        daemon = Daemon(reactor, slots, port, stats, switch.stop, trio.Event())
        task_status.started(daemon)
        await daemon.stop.wait()
        reactor.pause_all("shutting down")
        if slots is not None:
            await slots.drain()
        nursery.cancel_scope.cancel()
    daemon.stopped.set()


async def run_mcp_stdio(settings: Settings, *, launched_for_job: str | None) -> None:
    check_import_order()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with aioloop.open_loop(), trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            opened = await open_database(settings, role="mcp")
            try:
                await _serve_stdio(opened.settings, opened.db, launched_for_job)
            finally:
                await opened.db.close()
            nursery.cancel_scope.cancel()


def settle_memory() -> None:
    """Move everything built at start-up out of the garbage collector's way: the long-lived
    objects (imports, pools, apps) are never garbage, and scanning them shows up as tail
    latency on every claim."""
    gc.collect()
    gc.freeze()


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("mcp.stopping", signal=signal.Signals(signum).name, why="shutdown requested")
        scope.cancel()
        return


async def _serve_stdio(settings: Settings, db: Database, launched_for_job: str | None) -> None:
    worker = await authenticate_token(db, settings, "mcp")
    ws = Workspace.from_settings(settings)
    # Launched by `reactor run` for one job: the daemon already represents this worker, and
    # cleans up after the agent has left the worktree (cleaning here could pull it away while
    # the agent's hooks still run in it).
    reactor = Reactor(settings, db, worker, role="mcp", register_presence=launched_for_job is None)
    if launched_for_job is None:
        CleanupService(reactor, ws)

    async def fixed_worker(_ctx: object) -> Worker:
        if not reactor.state.token_valid:
            raise PermissionDenied(
                "SCRUM4ME_TOKEN was revoked or expired while running; create a new token and "
                "restart with it."
            )
        return worker

    server = build_server(ToolHost(reactor, ws, fixed_worker, launched_for_job=launched_for_job))
    async with trio.open_nursery() as nursery:
        await nursery.start(reactor.run)
        settle_memory()
        await server.run_stdio_async()  # returns at stdin EOF: Claude Code went away
        log.info("mcp.stdin_closed", why="the client closed stdin; stopping")
        nursery.cancel_scope.cancel()
