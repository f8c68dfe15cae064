"""Run a Reactor inside a test, with a consumer that records what it was given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from handlers.auth import Worker, authenticate
from handlers.claim import ClaimedJob
from reactor.config import Settings
from reactor.db import Database
from reactor.runtime import Reactor
from tests.factory import World


class Collector:
    """A consumer with a fixed number of slots; a slot frees when the test releases it."""

    name = "test"

    def __init__(self, slots: int = 1, product_id: str | None = None) -> None:
        self.slots = slots
        self.product_id = product_id
        self.jobs: list[ClaimedJob] = []
        self.active: set[str] = set()
        self._changed = trio.Event()

    def free_slots(self) -> int:
        return self.slots - len(self.active)

    def offer(self, job: ClaimedJob) -> bool:
        self.jobs.append(job)
        self.active.add(job.id)
        self._changed.set()
        self._changed = trio.Event()
        return True

    def release(self, job_id: str) -> None:
        self.active.discard(job_id)

    async def wait_for(self, count: int, within: float = 5) -> list[ClaimedJob]:
        with trio.fail_after(within):
            while len(self.jobs) < count:
                await self._changed.wait()
        return self.jobs

    @property
    def ids(self) -> list[str]:
        return [job.id for job in self.jobs]


def settings_for(dsn: str, token: str, home: Path, **env: str) -> Settings:
    base = {
        "HOME": str(home),
        "DATABASE_URL": dsn,
        "SCRUM4ME_TOKEN": token,
        "REACTOR_SWEEP_SECONDS": "60",
        "REACTOR_PING_SECONDS": "10",
        "REACTOR_PING_TIMEOUT_SECONDS": "5",
        "SCRUM4ME_AGENT_WORKTREE_DIR": str(home / "worktrees"),
    }
    return Settings.from_env({**base, **env})


async def worker_for(db: Database, world: World, instance: str) -> Worker:
    return await authenticate(db, world.token, instance, source="test token")


@asynccontextmanager
async def running_reactor(
    db: Database,
    settings: Settings,
    world: World,
    *,
    instance: str = "test-1",
    presence: bool = True,
) -> AsyncIterator[Reactor]:
    worker = await worker_for(db, world, instance)
    reactor = Reactor(settings, db, worker, role="test", register_presence=presence)
    async with trio.open_nursery() as nursery:
        await nursery.start(reactor.run)
        yield reactor
        nursery.cancel_scope.cancel()
