"""The claim pump: turns any number of wake-ups into claims for free slots only.

Consumers are whoever can take a job right now: the daemon's agent slots, and one waiter
per pending ``wait_for_job`` call. Wake-ups (notifications, sweeps, a slot freeing up) only
set a flag; one task runs passes. A pass walks the consumers in arrival order and claims for
each free slot until the queue is empty for that consumer's filter, so a burst of N
notifications costs one claim statement per product filter in use, which claims at most one
job per free slot, and one enqueued job goes to exactly one waiter: no thundering herd.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import trio

from handlers.auth import Worker
from handlers.claim import ClaimedJob, announce_claim, claim_jobs, rollback_claim
from reactor.db import Database, DatabaseError
from reactor.logs import get_logger

log = get_logger("reactor.pump")


class Consumer(Protocol):
    """Something that can take claimed jobs: agent slots, or a waiting MCP call."""

    name: str
    product_id: str | None

    def free_slots(self) -> int: ...

    def offer(self, job: ClaimedJob) -> bool:
        """Take the job (True), or refuse it because the consumer went away (False)."""
        ...


class Waiter:
    """One pending ``wait_for_job`` call: a single slot, filled at most once."""

    name = "mcp"

    def __init__(self, product_id: str | None) -> None:
        self.product_id = product_id
        self.job: ClaimedJob | None = None
        self.closed = False
        self._filled = trio.Event()

    def free_slots(self) -> int:
        return 0 if self.closed or self.job is not None else 1

    def offer(self, job: ClaimedJob) -> bool:
        if self.closed or self.job is not None:
            return False
        self.job = job
        self._filled.set()
        return True

    async def wait_filled(self) -> None:
        await self._filled.wait()


class ClaimPump:
    def __init__(
        self,
        db: Database,
        worker: Worker,
        *,
        kinds: Sequence[str],
        lease_seconds: int,
    ) -> None:
        self._db = db
        self.worker = worker
        self._kinds = list(kinds)
        self._lease_seconds = lease_seconds
        self._consumers: list[Consumer] = []
        self._wake = trio.Event()
        self._in_pass = False
        self._progress = trio.Event()
        self.paused_reason: str | None = None
        self._cooling: dict[str, tuple[float, float]] = {}
        self.passes = 0
        self.claim_attempts = 0
        self._closed = False

    def add(self, consumer: Consumer) -> None:
        self._consumers.append(consumer)
        self.wake("consumer added")

    def remove(self, consumer: Consumer) -> None:
        if consumer in self._consumers:
            self._consumers.remove(consumer)

    @property
    def idle(self) -> bool:
        return not self._consumers and not self._in_pass

    def close(self) -> None:
        """End ``run`` after the pass in progress (an MCP-over-HTTP caller went away)."""
        self._closed = True
        self._wake.set()

    def wake(self, why: str) -> None:
        """Ask for a pass; any number of calls before it runs cost one pass."""
        if not self._wake.is_set():
            log.debug("pump.wake", why=why)
        self._wake.set()

    def cool_down(self, job_id: str, *, transient: bool) -> float:
        """Skip a job this process failed to prepare for a while (doubling each time).

        Without this, a job whose repository is not configured would be claimed, rolled back
        and claimed again in a hot loop (scrum4me-mcp's ISS-3 symptom).
        """
        base = 10.0 if transient else 120.0
        _until, previous = self._cooling.get(job_id, (0.0, 0.0))
        delay = min(1800.0, previous * 2 if previous else base)
        self._cooling[job_id] = (trio.current_time() + delay, delay)
        return delay

    def forgive(self, job_id: str) -> None:
        self._cooling.pop(job_id, None)

    def _excluded(self) -> list[str]:
        now = trio.current_time()
        return [job_id for job_id, (until, _delay) in self._cooling.items() if until > now]

    def pause(self, reason: str) -> None:
        """Stop claiming (shutdown, revoked token); waiters keep waiting."""
        if self.paused_reason != reason:
            log.info("pump.paused", why=reason)
        self.paused_reason = reason

    def resume(self) -> None:
        if self.paused_reason is not None:
            log.info("pump.resumed", why="the reason to pause is gone")
            self.paused_reason = None
            self.wake("resumed")

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if self._closed:
                return
            self._in_pass = True
            self._wake = trio.Event()
            try:
                if self.paused_reason is None:
                    await self._pass()
            except DatabaseError as exc:
                # The sweep (or the next notification) will try again once the DB is back.
                log.warning("pump.pass_failed", why=str(exc))
            except Exception:
                # Last resort: one odd error must not end claiming for this process.
                log.exception("pump.pass_crashed")
            finally:
                self._in_pass = False
                self._progress.set()
                self._progress = trio.Event()

    async def wait_quiet(self) -> None:
        """Wait until no pass is running or pending (tests and the demo use it to sync)."""
        while self._in_pass or self._wake.is_set():
            await self._progress.wait()

    async def _pass(self) -> None:
        """Claim for free slots: one batch statement per product filter, in arrival order."""
        self.passes += 1
        groups: dict[str | None, list[Consumer]] = {}
        for consumer in self._consumers:
            if consumer.free_slots() > 0:
                groups.setdefault(consumer.product_id, []).append(consumer)
        # Filtered consumers go first: an unfiltered batch could otherwise take the only job
        # of the product a waiter is waiting for while an unfiltered slot also waits.
        for product in sorted(groups, key=lambda key: key is None):
            if self.paused_reason is not None:
                return
            await self._serve(product, groups[product])

    async def _serve(self, product: str | None, consumers: list[Consumer]) -> None:
        wanted = sum(consumer.free_slots() for consumer in consumers)
        if wanted <= 0:
            return
        self.claim_attempts += 1
        jobs = await claim_jobs(
            self._db,
            self.worker,
            kinds=self._kinds,
            product_id=product,
            lease_seconds=self._lease_seconds,
            consumer=consumers[0].name,
            limit=wanted,
            excluded=self._excluded(),
            announce=False,
        )
        pending = list(jobs)
        for consumer in consumers:
            while pending and consumer.free_slots() > 0:
                if not consumer.offer(pending[0]):
                    break
                announce_claim(pending.pop(0), self.worker, consumer.name)
        for job in pending:
            # The consumer left between our count and the claim (e.g. its client
            # disconnected): the job goes straight back, and nobody is charged a retry.
            with trio.CancelScope(shield=True):
                await rollback_claim(self._db, self.worker, job.id, reason="consumer gone")
        if pending:
            self.wake("jobs returned by departed consumers")
