"""The database layer: the only module that imports asyncpg.

asyncpg runs on asyncio; the reactor runs on trio. Every public coroutine here is a trio
coroutine that crosses into asyncio through ``trio_asyncio.aio_as_trio`` exactly once per
transaction (stack-wiring Q1: a hop costs ~0.15 ms, so a transaction pays it once, not once
per statement). Multi-statement transactions are written as a ``body(tx)`` coroutine that
runs entirely on the asyncio side and may only await ``tx`` methods.

Two kinds of connection exist: a pool for queries, and one dedicated autocommit connection
per listener (``ListenSession``), because returning a connection to an asyncpg pool runs
``UNLISTEN *``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import asyncpg
import trio
from trio_asyncio import aio_as_trio

from reactor.config import dsn_parameters
from reactor.logs import get_logger
from reactor.sqlfiles import Query

T = TypeVar("T")
Row = asyncpg.Record
log = get_logger("reactor.db")

# Connection-level failures: the server went away, the socket broke, or it refused us.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
    # "cannot switch to state ...; another operation is in progress": asyncpg's protocol
    # state after the server went away mid-query (MagicStack/asyncpg#1069).
    asyncpg.InternalClientError,
)


class DatabaseError(Exception):
    """A statement failed on the server; ``sqlstate`` is the Postgres error code."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DatabaseUnavailable(DatabaseError):
    """The server could not be reached or the connection broke; retrying later may work."""


_TRANSLATED: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *_UNAVAILABLE)


def _translate(exc: BaseException) -> DatabaseError:
    if isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, _UNAVAILABLE):
        return DatabaseError(str(exc), getattr(exc, "sqlstate", None))
    return DatabaseUnavailable(f"{type(exc).__name__}: {exc}")


def is_pooler(dsn: str) -> bool:
    """A Neon ``-pooler`` host, or a URL that says ``pgbouncer=true`` (Prisma's flag)."""
    if "-pooler" in (urlsplit(dsn).hostname or ""):
        return True
    return dsn_parameters("the database URL", dsn).pgbouncer


# Sets of dropped URL parameters already reported: the warning is for the operator at start-up,
# not once per listener reconnect or pool.
_REPORTED_DROPS: set[frozenset[str]] = set()


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (unlock all, CLOSE ALL, UNLISTEN *, RESET ALL).

    That is one more round trip for every statement. Pool connections never hold session
    advisory locks (only transaction-scoped ones), cursors, LISTENs or SET changes, so
    there is nothing to reset; asyncpg still rolls back a transaction left open.
    """


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _connect_kwargs(dsn: str, application_name: str) -> dict[str, Any]:
    """asyncpg's arguments for ``dsn``, whose query string may be written for Prisma or libpq.

    Only the parameters asyncpg reads itself stay in the URL (it would send any other one to
    the server, which refuses the connection); the rest become asyncpg arguments or are
    dropped, as sorted by ``reactor.config.dsn_parameters``.
    """
    params = dsn_parameters("the database URL", dsn)
    base, _, rest = dsn.partition("?")
    _query, hash_mark, fragment = rest.partition("#")
    query = "&".join(params.kept)
    # Rebuilt by hand, not with urlunsplit: the user, password and host stay byte for byte.
    cleaned = base + (f"?{query}" if query else "") + hash_mark + fragment
    kwargs: dict[str, Any] = {
        "dsn": cleaned,
        "server_settings": {
            **params.server_settings,
            # Prisma writes timestamp(3) columns in UTC; our now() must land in the same zone.
            "application_name": application_name[:63],
            "TimeZone": "UTC",
        },
        "command_timeout": 60,
    }
    if params.connect_timeout is not None:
        kwargs["timeout"] = params.connect_timeout
    if params.statement_cache_size is not None:
        kwargs["statement_cache_size"] = params.statement_cache_size
    if params.pgbouncer or is_pooler(dsn):
        # A transaction pooler (PgBouncer, Neon -pooler) may hand each statement to another
        # server session, where a prepared statement cached by asyncpg does not exist.
        kwargs["statement_cache_size"] = 0
    if params.dropped and frozenset(params.dropped) not in _REPORTED_DROPS:
        _REPORTED_DROPS.add(frozenset(params.dropped))
        log.warning(
            "db.url_parameters_ignored",
            host=urlsplit(dsn).hostname,
            parameters=sorted(params.dropped),
            why="; ".join(f"{name}: {reason}" for name, reason in params.dropped.items()),
        )
    return kwargs


class Tx:
    """The statement API inside ``Database.transaction`` (runs on the asyncio side)."""

    def __init__(self, conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy[Row]) -> None:
        self._conn = conn

    async def fetch(self, q: Query, *args: Any) -> list[Row]:
        return await self._conn.fetch(q.text, *args)

    async def fetchrow(self, q: Query, *args: Any) -> Row | None:
        return await self._conn.fetchrow(q.text, *args)

    async def fetchval(self, q: Query, *args: Any) -> Any:
        return await self._conn.fetchval(q.text, *args)

    async def execute(self, q: Query, *args: Any) -> str:
        return await self._conn.execute(q.text, *args)

    async def execute_script(self, text: str) -> None:
        """Run a whole SQL file (migrations); never used with values."""
        await self._conn.execute(text)


class Database:
    """A pool of connections with a trio-facing API; one bridge hop per call."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn

    @classmethod
    async def connect(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 8, application_name: str = "reactor"
    ) -> Database:
        # Outside the try: a bad URL is a ConfigError to fix, not an outage to wait out.
        kwargs = _connect_kwargs(dsn, application_name)
        try:
            pool = await aio_as_trio(asyncpg.create_pool)(
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                reset=_keep_session,
                **kwargs,
            )
        except Exception as exc:
            raise _translate(exc) from exc
        assert pool is not None
        return cls(pool, dsn)

    async def close(self) -> None:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            try:
                await aio_as_trio(self._pool.close)()
            except Exception as exc:
                log.warning("db.close_failed", error=str(exc))
        if scope.cancelled_caught:
            self._pool.terminate()

    async def fetch(self, q: Query, *args: Any) -> list[Row]:
        return await self._call(self._pool.fetch, q, args)

    async def fetchrow(self, q: Query, *args: Any) -> Row | None:
        return await self._call(self._pool.fetchrow, q, args)

    async def fetchval(self, q: Query, *args: Any) -> Any:
        return await self._call(self._pool.fetchval, q, args)

    async def execute(self, q: Query, *args: Any) -> str:
        return await self._call(self._pool.execute, q, args)

    async def transaction(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``body`` in one transaction on one pooled connection, in a single bridge hop."""

        async def run() -> T:
            async with self._pool.acquire() as conn, conn.transaction():
                return await body(Tx(conn))

        try:
            return cast(T, await aio_as_trio(run)())
        except DatabaseError:
            raise
        except Exception as exc:
            if isinstance(exc, _TRANSLATED):
                raise _translate(exc) from exc
            raise

    async def _call(self, method: Callable[..., Awaitable[T]], q: Query, args: Sequence[Any]) -> T:
        return await _bridge(method, q, args)


async def _bridge(method: Callable[..., Awaitable[T]], q: Query, args: Sequence[Any]) -> T:
    """One statement from trio to asyncpg, with asyncpg's errors turned into ours."""
    try:
        return cast(T, await aio_as_trio(method)(q.text, *args))
    except Exception as exc:
        if isinstance(exc, _TRANSLATED):
            raise _translate(exc) from exc
        raise


NotifyCallback = Callable[[str, str], None]


class ListenSession:
    """One dedicated autocommit connection that LISTENs; never part of a pool.

    ``on_notify(channel, payload)`` and ``on_lost()`` are called synchronously inside the
    trio run (asyncpg schedules them with ``loop.call_soon``). Under trio-asyncio an
    exception escaping such a callback tears down the whole loop (stack-wiring rule 6),
    so both are wrapped and can never raise.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def open(
        cls,
        dsn: str,
        channels: Sequence[str],
        on_notify: NotifyCallback,
        on_lost: Callable[[], None],
        *,
        application_name: str,
    ) -> ListenSession:
        kwargs = _connect_kwargs(dsn, application_name)  # a ConfigError is not an outage
        try:
            conn = await aio_as_trio(asyncpg.connect)(**kwargs)
        except Exception as exc:
            raise _translate(exc) from exc
        session = cls(conn)

        def notified(_conn: object, _pid: int, channel: str, payload: str) -> None:
            try:
                on_notify(channel, payload)
            except Exception:
                log.exception("listener.callback_failed", channel=channel)

        def lost(_conn: object) -> None:
            try:
                on_lost()
            except Exception:
                log.exception("listener.lost_callback_failed")

        try:
            for channel in channels:
                await aio_as_trio(conn.add_listener)(channel, notified)
            conn.add_termination_listener(lost)
        except BaseException:
            session.terminate()
            raise
        return session

    @property
    def backend_pid(self) -> int:
        return self._conn.get_server_pid()

    @property
    def is_closed(self) -> bool:
        return self._conn.is_closed()

    async def fetchrow(self, q: Query, *args: Any) -> Row | None:
        """Run one statement on the listening session itself (health round-trips)."""
        return await _bridge(self._conn.fetchrow, q, args)

    def terminate(self) -> None:
        """Drop the socket now; used when the session is presumed half-open."""
        if not self._conn.is_closed():
            self._conn.terminate()

    async def close(self) -> None:
        with trio.move_on_after(2) as scope:
            scope.shield = True
            try:
                await aio_as_trio(self._conn.close)()
            except Exception as exc:
                log.debug("listener.close_failed", error=str(exc))
        self.terminate()
