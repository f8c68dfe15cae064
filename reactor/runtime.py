"""The reactor: one nursery owning the listener, the dispatcher, the claim pump and the sweeper.

It is the piece shared by ``reactor run`` (agent slots + MCP over HTTP) and ``reactor mcp``
(MCP over stdio): whoever consumes jobs plugs into ``reactor.pump``; whoever must react to
status changes (deferred cleanup, cancelled agents) adds a status hook; whoever must catch
up after an outage (cleanup missed while down) adds a sweep hook.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from handlers import presence
from handlers.auth import Worker
from handlers.claim import rescue_expired
from reactor import metrics
from reactor.config import Settings
from reactor.db import Database, DatabaseError
from reactor.dispatch import Dispatcher
from reactor.events import (
    APP_CHANGES,
    JOB_ENQUEUED,
    JOB_STATUS_CHANGED,
    WORKER_CONNECTED,
    Event,
    JobEnqueued,
    JobStatusChanged,
    WorkerConnected,
)
from reactor.listener import Listener, PresenceBeat
from reactor.logs import get_logger
from reactor.pump import ClaimPump

log = get_logger("reactor.runtime")

ACTIVE = frozenset({"QUEUED", "CLAIMED", "RUNNING"})
TERMINAL = frozenset({"DONE", "FAILED", "CANCELLED", "SKIPPED"})
LIVE_WORKERS_KEPT = 1000  # worker_connected arrivals remembered for /health

StatusHook = Callable[[JobStatusChanged], Awaitable[None]]
SweepHook = Callable[[str], Awaitable[None]]


@dataclass
class LiveWorker:
    instance_id: str
    seen_at: float


@dataclass
class ReactorState:
    """What /health and `reactor status` report about this process."""

    token_valid: bool = True
    last_sweep_at: float | None = None
    # When each worker last (re)connected, as heard on worker_connected.
    live_workers: dict[str, LiveWorker] = field(default_factory=dict)


class Reactor:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        worker: Worker,
        *,
        role: str,
        register_presence: bool = True,
    ) -> None:
        self.settings = settings
        self.db = db
        self.worker = worker
        self.role = role
        self.state = ReactorState()
        self._register_presence = register_presence
        self.pump = self._new_pump(worker)
        self._pumps: dict[tuple[str, str], ClaimPump] = {
            (worker.token_id, worker.instance_id): self.pump
        }
        self.dispatcher = Dispatcher(on_overflow=lambda: self.request_sweep("inbox overflow"))
        # Enqueues only wake pumps, so they run as reflexes: no task switch before the claim.
        self.dispatcher.register_reflex(JOB_ENQUEUED, self._on_enqueued)
        self.dispatcher.register_reflex(APP_CHANGES, self._on_enqueued)
        self.dispatcher.register(JOB_STATUS_CHANGED, self._on_status_changed)
        self.dispatcher.register(WORKER_CONNECTED, self._on_worker_connected)
        self.listener = Listener(
            settings.require_listen_url(),
            self.dispatcher.channels,
            self.dispatcher.deliver,
            self.request_sweep,
            application_name=f"reactor-listen:{worker.instance_id}",
            ping_seconds=settings.ping_seconds,
            ping_timeout_seconds=settings.ping_timeout_seconds,
            beat=PresenceBeat(
                worker.token_id, worker.instance_id, self._reregister, self._set_token_validity
            )
            if register_presence
            else None,
        )
        self.status_hooks: list[StatusHook] = []
        self.sweep_hooks: list[SweepHook] = []
        self._sweep_wanted = trio.Event()
        self._sweep_reason = "start"
        self._first_sweep = trio.Event()
        self._nursery: trio.Nursery | None = None

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None, "the reactor is not running"
        return self._nursery

    def _new_pump(self, worker: Worker) -> ClaimPump:
        return ClaimPump(
            self.db, worker, kinds=self.settings.kinds, lease_seconds=self.settings.lease_seconds
        )

    def pump_for(self, worker: Worker) -> ClaimPump:
        """The claim pump of one identity (MCP-over-HTTP callers bring their own token)."""
        key = (worker.token_id, worker.instance_id)
        pump = self._pumps.get(key)
        if pump is None:
            pump = self._pumps[key] = self._new_pump(worker)
            self.nursery.start_soon(pump.run)
            if not self.state.token_valid and worker.token_id == self.worker.token_id:
                pump.pause("token revoked or expired")
        return pump

    def forget_pump(self, worker: Worker) -> None:
        """Drop the pump of an MCP-over-HTTP identity that went idle, so every distinct
        instance id a client ever sent does not keep a task and its state for good."""
        key = (worker.token_id, worker.instance_id)
        pump = self._pumps.get(key)
        if pump is None or pump is self.pump or not pump.idle:
            return
        del self._pumps[key]
        pump.close()

    def pause_all(self, reason: str) -> None:
        """Stop every pump claiming (shutdown): the daemon's and the HTTP callers'."""
        for pump in self._pumps.values():
            pump.pause(reason)

    def _wake_user(self, user_id: str, why: str) -> None:
        for pump in self._pumps.values():
            if pump.worker.user_id == user_id:
                pump.wake(why)

    def request_sweep(self, reason: str) -> None:
        self._sweep_reason = reason
        self._sweep_wanted.set()

    async def run(
        self, *, task_status: trio.TaskStatus[Reactor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled; ``started`` fires once LISTEN is verified and caught up."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._register_presence:
                    await presence.register(self.db, self.worker, hostname=self.settings.hostname)
                nursery.start_soon(self.dispatcher.run)
                for pump in self._pumps.values():
                    nursery.start_soon(pump.run)
                await nursery.start(self.listener.run)
                nursery.start_soon(self._sweeper)
                await self._first_sweep.wait()
                log.info(
                    "reactor.ready",
                    role=self.role,
                    instance_id=self.worker.instance_id,
                    kinds=list(self.settings.kinds),
                    why="listening, verified and caught up",
                )
                task_status.started(self)
        finally:
            self._nursery = None
            if self._register_presence:
                await self._unregister()

    async def _unregister(self) -> None:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            try:
                await presence.unregister(self.db, self.worker)
            except DatabaseError as exc:
                log.warning("presence.unregister_failed", why=str(exc))

    async def _sweeper(self) -> None:
        next_expiry_in: float | None = None
        while True:
            timeout = self.settings.sweep_seconds
            if next_expiry_in is not None:
                # Wake right after the earliest lease expires, not up to a sweep later.
                timeout = min(timeout, next_expiry_in + 0.05)
            lease_due = next_expiry_in is not None and timeout < self.settings.sweep_seconds
            with trio.move_on_after(timeout):
                await self._sweep_wanted.wait()
            if self._sweep_wanted.is_set():
                reason = self._sweep_reason
                self._sweep_wanted = trio.Event()
            else:
                reason = "lease expiry" if lease_due else "periodic"
            next_expiry_in = await self._sweep(reason)

    async def _sweep(self, reason: str) -> float | None:
        """Rescue expired leases of every user served here, wake every pump, run hooks."""
        metrics.SWEEPS.labels(reason.split(":")[0]).inc()
        expiries: list[float] = []
        try:
            for user_id in sorted({pump.worker.user_id for pump in self._pumps.values()}):
                report = await rescue_expired(
                    self.db,
                    user_id,
                    kinds=self.settings.kinds,
                    max_retries=self.settings.max_retries,
                )
                if report.next_expiry_in is not None:
                    expiries.append(report.next_expiry_in)
        except DatabaseError as exc:
            log.warning("sweep.failed", reason=reason, why=str(exc))
            return None
        except Exception:
            log.exception("sweep.crashed", reason=reason)  # last resort: the next sweep retries
            return None
        self.state.last_sweep_at = time.time()
        for pump in self._pumps.values():
            pump.wake(f"sweep ({reason})")
        for hook in self.sweep_hooks:
            try:
                await hook(reason)
            except Exception:
                log.exception("sweep.hook_failed", reason=reason)
        self._first_sweep.set()
        return min(expiries, default=None)

    def _serves(self, user_id: str) -> bool:
        return any(pump.worker.user_id == user_id for pump in self._pumps.values())

    def _on_enqueued(self, event: Event) -> None:
        assert isinstance(event, JobEnqueued)
        if event.kind is not None and event.kind not in self.settings.kinds:
            return
        self._wake_user(event.user_id, f"job_enqueued {event.job_id or ''}".strip())

    async def _on_status_changed(self, event: Event) -> None:
        assert isinstance(event, JobStatusChanged)
        if not self._serves(event.user_id):
            return
        if event.old_status in ACTIVE and event.new_status in TERMINAL | {"QUEUED"}:
            # The next job of the story (or of the sprint sequence) may be claimable now.
            self._wake_user(
                event.user_id, f"job {event.job_id} {event.old_status}->{event.new_status}"
            )
        for hook in self.status_hooks:
            await hook(event)

    async def _on_worker_connected(self, event: Event) -> None:
        assert isinstance(event, WorkerConnected)
        if not self._serves(event.user_id):
            return
        live = self.state.live_workers
        live.pop(event.instance_id, None)
        live[event.instance_id] = LiveWorker(event.instance_id, time.time())
        # Instance ids come and go (one per agent run): keep the most recent ones only, so
        # they do not pile up for the life of the process (dicts keep insertion order).
        while len(live) > LIVE_WORKERS_KEPT:
            del live[next(iter(live))]
        log.info("presence.worker_connected", instance_id=event.instance_id)
        self._wake_user(event.user_id, f"worker {event.instance_id} connected")

    async def _reregister(self) -> None:
        await presence.register(self.db, self.worker, hostname=self.settings.hostname)

    def _set_token_validity(self, valid: bool) -> None:
        if valid == self.state.token_valid:
            return
        self.state.token_valid = valid
        own = [
            pump for pump in self._pumps.values() if pump.worker.token_id == self.worker.token_id
        ]
        if valid:
            for pump in own:
                pump.resume()
        else:
            log.error(
                "auth.token_invalid",
                why="SCRUM4ME_TOKEN was revoked or expired while running; claiming stopped. "
                "Create a new token and restart with it.",
            )
            for pump in own:
                pump.pause("token revoked or expired")
