"""PostgreSQL itself stops mid-stream and comes back (a private cluster, never the shared one)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from reactor.db import Database, DatabaseError, DatabaseUnavailable
from reactor.ids import new_cuid
from reactor.listener import ListenerState
from reactor.migrate import migrate
from tests.factory import World, make_world
from tests.pg import unique_name
from tests.reliability.support import (
    PrivateServer,
    bulk_stories,
    enqueue_as,
    jobs_by_id,
    sql,
)
from tests.running import Collector, running_reactor, settings_for
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(120)

JOBS = 120
STOP_AFTER = 40
RETRY_SECONDS = 0.1
OUTAGE_FAILURES = 20  # enqueue attempts refused during the outage: about two seconds of it


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer.start_new()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def private_db(aio_loop: None, private_server: PrivateServer) -> AsyncIterator[Database]:
    dsn = private_server.pg.create_database(unique_name("reactor_restart"))
    db = await Database.connect(dsn, max_size=4)
    try:
        await migrate(db, with_app_schema=True)
        yield db
    finally:
        await db.close()


class Stream:
    """The app: enqueues jobs one by one; a refused enqueue is retried with the same id."""

    def __init__(self, db: Database, world: World, task_ids: list[str]) -> None:
        self._db = db
        self._world = world
        self._task_ids = task_ids
        self.jobs: list[str] = []
        self.failures = 0

    async def run(self, count: int) -> None:
        for task_id in self._task_ids[len(self.jobs) : len(self.jobs) + count]:
            job_id = new_cuid()
            while True:
                try:
                    await enqueue_as(self._db, self._world, task_id, job_id)
                    break
                except DatabaseError:
                    self.failures += 1
                    await trio.sleep(RETRY_SECONDS)
            self.jobs.append(job_id)
            await trio.sleep(0.01)  # a steady stream, not one burst


async def test_the_reactor_recovers_by_itself_from_a_postgres_restart_and_loses_no_job(
    private_server: PrivateServer, private_db: Database, tmp_path: Path
) -> None:
    db = private_db
    world = await make_world(db)
    stories = await bulk_stories(db, world, JOBS, 1)
    collector = Collector(slots=JOBS)
    settings = settings_for(db.dsn, world.token, tmp_path)  # sweep 60 s: no polling to lean on
    app = await Database.connect(db.dsn, max_size=2, application_name="the-app")
    stream = Stream(app, world, [story.task_ids[0] for story in stories])
    try:
        async with running_reactor(db, settings, world, instance="survivor") as reactor:
            reactor.pump.add(collector)
            await stream.run(STOP_AFTER)
            # Stop the server mid-stream, whatever the reactor has in flight at that moment.
            await trio.to_thread.run_sync(private_server.stop)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.run, JOBS - STOP_AFTER)
                # The outage lasts until the app has been refused for a while and the
                # reactor has noticed; both are conditions, not a fixed sleep.
                await eventually(
                    lambda: (
                        stream.failures >= OUTAGE_FAILURES
                        and reactor.listener.status.state is not ListenerState.HEALTHY
                    ),
                    within=20,
                )
                await trio.to_thread.run_sync(private_server.start)
            await eventually(lambda: len(collector.jobs) >= JOBS, within=30)
            await eventually(
                lambda: reactor.listener.status.state is ListenerState.HEALTHY, within=10
            )
            status = reactor.listener.status
    finally:
        await app.close()
    assert len(stream.jobs) == JOBS
    assert stream.failures >= OUTAGE_FAILURES, "enqueues were refused while the server was down"
    assert status.reconnects >= 1
    assert len(collector.ids) == JOBS, "no job handed out twice"
    assert set(collector.ids) == set(stream.jobs), "no job missing"
    rows = await jobs_by_id(db, stream.jobs)
    assert {(r["status"], r["retry_count"], r["worker_instance_id"]) for r in rows.values()} == {
        ("CLAIMED", 0, "survivor")
    }


async def test_queries_in_flight_during_a_shutdown_fail_as_database_unavailable(
    private_server: PrivateServer, private_db: Database
) -> None:
    db = await Database.connect(private_db.dsn, min_size=8, max_size=8)
    untranslated: list[str] = []
    numbers = itertools.count()
    answered = [0]

    async def busy(stop: trio.Event) -> None:
        while not stop.is_set():
            try:
                # A new text each time: every statement is prepared afresh, as after a reconnect.
                await db.fetchval(sql(f"SELECT {next(numbers)}"))
                answered[0] += 1
            except DatabaseUnavailable:
                await trio.sleep(0.01)
            except Exception as exc:
                untranslated.append(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
                await trio.sleep(0.01)

    try:
        for _restart in range(5):  # one restart has always been enough; five make it certain
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(busy, stop)
                answered[0] = 0
                await eventually(lambda: answered[0] > 40, within=10)  # busy before it goes
                await trio.to_thread.run_sync(private_server.stop)
                await trio.to_thread.run_sync(private_server.start)
                answered[0] = 0
                await eventually(lambda: answered[0] > 8, within=10)  # serving again
                stop.set()
            if untranslated:
                break
    finally:
        await db.close()
    assert untranslated == []
