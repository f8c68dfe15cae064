"""The listening connection is killed again and again while jobs stream in."""

from __future__ import annotations

from pathlib import Path

import pytest

from reactor.db import Database
from reactor.ids import new_cuid
from reactor.listener import ListenerState
from reactor.runtime import Reactor
from tests.factory import make_world
from tests.reliability.support import (
    TERMINATE_LISTENERS,
    bulk_stories,
    enqueue_as,
    jobs_by_id,
)
from tests.running import Collector, running_reactor, settings_for
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(90)

JOBS = 500
KILLS = 20


def listening_anew(reactors: tuple[Reactor, ...], killed: set[int]) -> bool:
    """Every listener is verified again, on a backend that was not killed yet."""
    for reactor in reactors:
        pid = reactor.listener.backend_pid
        if reactor.listener.status.state is not ListenerState.HEALTHY or pid in killed or not pid:
            return False
    return True


async def test_every_job_is_claimed_exactly_once_while_listeners_are_killed_twenty_times(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    stories = await bulk_stories(db, world, JOBS, 1)
    collectors = Collector(slots=JOBS), Collector(slots=JOBS)
    # The sweep is 60 s away: only notifications and the catch-up after each reconnect count.
    settings = settings_for(dsn, world.token, tmp_path)
    jobs: list[str] = []
    terminated = 0
    killed_pids: set[int] = set()
    async with (
        running_reactor(db, settings, world, instance="chaos-1") as first,
        running_reactor(db, settings, world, instance="chaos-2") as second,
    ):
        reactors = first, second
        for reactor, collector in zip(reactors, collectors, strict=True):
            reactor.pump.add(collector)
        every = JOBS // KILLS
        for index, story in enumerate(stories):
            if index % every == every // 2:
                # Kill only once both listeners are back, so every kill costs both a reconnect.
                await eventually(lambda: listening_anew(reactors, killed_pids), within=10)
                killed_pids.update(r.listener.backend_pid or 0 for r in reactors)
                terminated += await db.fetchval(TERMINATE_LISTENERS)
            job_id = new_cuid()
            await enqueue_as(db, world, story.task_ids[0], job_id)
            jobs.append(job_id)
        await eventually(lambda: sum(len(c.jobs) for c in collectors) >= JOBS, within=20)
        await eventually(lambda: listening_anew(reactors, killed_pids), within=10)
        reconnects = [reactor.listener.status.reconnects for reactor in reactors]
    claimed = collectors[0].ids + collectors[1].ids
    assert terminated == 2 * KILLS, "each kill hit both listeners"
    assert all(count >= KILLS for count in reconnects), reconnects
    assert len(claimed) == JOBS, "no job handed out twice"
    assert set(claimed) == set(jobs), "no job missing"
    assert collectors[0].jobs, "both reactors take part"
    assert collectors[1].jobs, "both reactors take part"
    rows = await jobs_by_id(db, jobs)
    holder = {job_id: "chaos-1" for job_id in collectors[0].ids}
    holder.update({job_id: "chaos-2" for job_id in collectors[1].ids})
    for job_id in jobs:
        row = rows[job_id]
        assert (row["status"], row["retry_count"], row["worker_instance_id"]) == (
            "CLAIMED",
            0,
            holder[job_id],
        ), job_id
