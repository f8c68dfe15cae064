"""The dedicated listener: one autocommit connection that LISTENs and proves it still does.

On every (re)connect, in this order: LISTEN on every channel, verify with
``pg_listening_channels()``, then ask for a catch-up sweep. The order matters: a sweep run
before LISTEN is active could miss a job enqueued in between (iopsystems/durable#66).
Postgres never replays notifications, so the sweep is what makes a lost notification cost
latency instead of a job.

Every ``ping_seconds`` a single statement on the same session re-reads the listening
channels and sends a NOTIFY to a channel private to this listener; if the channels are gone
(someone ran UNLISTEN) or the ping does not come back within ``ping_timeout_seconds`` (a
half-open socket, a stopped backend), the session is dropped and rebuilt. Reconnects back off
exponentially with jitter, starting within 100 ms and capped at a few seconds.
"""

from __future__ import annotations

import enum
import os
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from reactor import metrics
from reactor.db import DatabaseError, ListenSession
from reactor.logs import get_logger
from reactor.sqlfiles import query

log = get_logger("reactor.listener")

_TICK = query("listener.tick")
FIRST_RETRY_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 5.0


class ListenerState(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    RECONNECTING = "reconnecting"
    DOWN = "down"


class _SessionLost(Exception):
    """The current session can no longer be trusted; ``reason`` says why."""


@dataclass(frozen=True)
class PresenceBeat:
    """The presence heartbeat that rides on the listener's tick (see sql/queries/listener.sql)."""

    token_id: str
    instance_id: str
    reregister: Callable[[], Awaitable[None]]
    token_validity: Callable[[bool], None]


@dataclass(frozen=True)
class ListenerStatus:
    state: ListenerState
    reconnects: int
    last_notification_at: float | None
    unhealthy_for: float
    last_error: str | None


class Listener:
    """Owns the LISTEN session; hands every notification to ``deliver(channel, payload)``.

    ``deliver`` is synchronous and runs inside the asyncpg callback: it must not block and
    must not raise (the DB layer guards the latter).
    """

    def __init__(
        self,
        dsn: str,
        channels: Sequence[str],
        deliver: Callable[[str, str], None],
        on_connected: Callable[[str], None],
        *,
        application_name: str,
        ping_seconds: float = 10.0,
        ping_timeout_seconds: float = 5.0,
        down_after_seconds: float = 10.0,
        beat: PresenceBeat | None = None,
    ) -> None:
        self._dsn = dsn
        self._channels = list(channels)
        self._deliver = deliver
        self._on_connected = on_connected
        self._application_name = application_name
        self._ping_seconds = ping_seconds
        self._ping_timeout = ping_timeout_seconds
        self._down_after = down_after_seconds
        self._beat = beat
        self._ping_channel = f"reactor_ping_{os.getpid()}_{secrets.token_hex(4)}"
        self._session: ListenSession | None = None
        self._lost = trio.Event()
        self._pong = trio.Event()
        self._nonce = ""
        self._state = ListenerState.STARTING
        self._unhealthy_since = trio.current_time()
        self._reconnects = 0
        self._last_notification_wall: float | None = None
        self._last_error: str | None = None

    @property
    def status(self) -> ListenerStatus:
        state, unhealthy_for = self._state, 0.0
        if state is not ListenerState.HEALTHY:
            unhealthy_for = trio.current_time() - self._unhealthy_since
            if state is ListenerState.RECONNECTING and unhealthy_for >= self._down_after:
                state = ListenerState.DOWN  # still failing after the grace: say so
        return ListenerStatus(
            state,
            self._reconnects,
            self._last_notification_wall,
            unhealthy_for,
            self._last_error,
        )

    @property
    def backend_pid(self) -> int | None:
        session = self._session
        return None if session is None or session.is_closed else session.backend_pid

    @property
    def session(self) -> ListenSession | None:
        """The live session (for tests that sabotage it)."""
        return self._session

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen forever; ``task_status.started()`` fires after the first verified LISTEN."""
        attempt = 0
        started = False
        while True:
            try:
                await self._connect()
                attempt = 0
                if not started:
                    started = True
                    task_status.started()
                await self._watch()
            except (_SessionLost, DatabaseError, OSError) as exc:
                reason = str(exc) or type(exc).__name__
                self._mark_unhealthy(reason)
            except Exception as exc:
                # Last resort: an unexpected error rebuilds the session instead of ending LISTEN.
                log.exception("listener.crashed")
                self._mark_unhealthy(f"unexpected {type(exc).__name__}: {exc}")
            finally:
                self._drop_session()
            delay = _backoff(attempt)
            attempt += 1
            self._reconnects += 1
            metrics.LISTENER_RECONNECTS.inc()
            log.warning(
                "listener.reconnecting",
                attempt=attempt,
                retry_in_ms=round(delay * 1000),
                why=self._last_error,
            )
            await trio.sleep(delay)

    async def _connect(self) -> None:
        self._lost = trio.Event()
        channels = [*self._channels, self._ping_channel]
        self._session = await ListenSession.open(
            self._dsn,
            channels,
            self._on_notify,
            self._lost.set,
            application_name=self._application_name,
        )
        await self._verify(first=True)
        was = self._state
        self._state = ListenerState.HEALTHY
        self._last_error = None
        metrics.LISTENER_UP.set(1)
        reason = "start" if was is ListenerState.STARTING else "reconnect"
        log.info(
            "listener.listening",
            channels=self._channels,
            backend_pid=self.backend_pid,
            why=f"{reason}: LISTEN verified, asking for a catch-up sweep",
        )
        self._on_connected(reason)

    async def _watch(self) -> None:
        while True:
            with trio.move_on_after(self._ping_seconds):
                await self._lost.wait()
            if self._lost.is_set():
                raise _SessionLost("the LISTEN connection was closed by the server or the network")
            await self._verify(first=False)

    async def _verify(self, *, first: bool) -> None:
        """One tick: channels still registered, and a self-addressed NOTIFY comes back."""
        session = self._session
        assert session is not None
        self._pong = trio.Event()
        self._nonce = secrets.token_hex(8)
        beat = None if first else self._beat
        with trio.move_on_after(self._ping_timeout) as scope:
            row = await session.fetchrow(
                _TICK,
                self._ping_channel,
                self._nonce,
                beat.token_id if beat else None,
                beat.instance_id if beat else None,
            )
            await self._pong.wait()
        if scope.cancelled_caught:
            raise _SessionLost(
                f"no answer to the listener ping within {self._ping_timeout:g}s "
                "(half-open connection or stalled server)"
            )
        assert row is not None
        missing = sorted(set(self._channels) - set(row["channels"]))
        if missing:
            raise _SessionLost(f"the session stopped listening on {', '.join(missing)}")
        if beat is not None:
            await self._after_beat(beat, row["token_valid"], row["beats"])

    async def _after_beat(self, beat: PresenceBeat, token_valid: bool | None, beats: int) -> None:
        beat.token_validity(bool(token_valid))
        if token_valid and beats == 0:
            log.warning("presence.missing", why="presence row disappeared; registering again")
            await beat.reregister()

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == self._ping_channel:
            if payload == self._nonce:
                self._pong.set()
            return
        self._last_notification_wall = time.time()
        self._deliver(channel, payload)

    def _mark_unhealthy(self, reason: str) -> None:
        if self._state in (ListenerState.HEALTHY, ListenerState.STARTING):
            self._unhealthy_since = trio.current_time()
        self._last_error = reason
        down = trio.current_time() - self._unhealthy_since >= self._down_after
        self._state = ListenerState.DOWN if down else ListenerState.RECONNECTING
        metrics.LISTENER_UP.set(0)

    def _drop_session(self) -> None:
        if self._session is not None:
            self._session.terminate()
            self._session = None


def _backoff(attempt: int) -> float:
    """Exponential backoff with jitter: ~25-50 ms first, then doubling, capped at 5 s."""
    ceiling = min(MAX_BACKOFF_SECONDS, FIRST_RETRY_SECONDS * (2**attempt))
    return float(ceiling * random.uniform(0.5, 1.0))
