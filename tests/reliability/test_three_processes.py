"""Three `reactor run` processes drain 2,000 jobs over 200 stories, each job exactly once.

The agent is ``:`` (a shell builtin, exit 0 = done): every job still costs a real process,
a context file, a log file and four status writes. Measured on the 2-core machine: 2,000
jobs in 26-46 s depending on what else runs, so the full count fits the suite's budget.
"""

from __future__ import annotations

import collections
import itertools
from pathlib import Path

import pytest
import trio

from reactor.db import Database
from tests.factory import make_world
from tests.reliability.support import bulk_enqueue, bulk_stories, jobs_by_id, process_group, sql
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(150)

STORIES = 200
TASKS = 10
INSTANCES = ("proc-1", "proc-2", "proc-3")
DONE = sql("SELECT count(*) FROM claude_jobs WHERE id = ANY($1::text[]) AND status = 'DONE'")


async def test_three_processes_run_every_job_once_and_keep_each_storys_order(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    stories = await bulk_stories(db, world, STORIES, TASKS)
    with process_group(tmp_path / "procs", dsn, world.token) as group:
        # Exit 0 means done; no worktrees, so the agent is the cheapest real process there is.
        processes = [
            group.start(
                instance,
                ":",
                REACTOR_CONCURRENCY="8",
            )
            for instance in INSTANCES
        ]
        await eventually(lambda: all(p.ready() for p in processes), within=30)
        # Task n of every story first, so no story's jobs sit together at the head of the
        # queue: the claim, not the insert order, has to keep each story in order.
        by_task = [story.task_ids[n] for n in range(TASKS) for story in stories]
        jobs_by_task = dict(zip(by_task, await bulk_enqueue(db, world, by_task), strict=True))
        jobs = list(jobs_by_task.values())
        start = trio.current_time()

        async def all_done() -> bool:
            for process in processes:
                process.alive()  # fails fast if one died
            return int(await db.fetchval(DONE, jobs)) == len(jobs)

        await eventually(all_done, within=120)
        elapsed = trio.current_time() - start
        claims = {process.instance: process.claimed() for process in processes}
    print(f"{len(jobs)} jobs in {elapsed:.1f}s ({len(jobs) / elapsed:.0f}/s)")
    counted = collections.Counter(job for claimed in claims.values() for job in claimed)
    assert not [job for job, times in counted.items() if times > 1], "claimed twice"
    assert set(counted) == set(jobs), "every job claimed"
    assert all(claims.values()), {name: len(ids) for name, ids in claims.items()}
    rows = await jobs_by_id(db, jobs)
    assert {(r["status"], r["retry_count"]) for r in rows.values()} == {("DONE", 0)}
    for instance, claimed in claims.items():
        assert {rows[job]["worker_instance_id"] for job in claimed} == {instance}
    for story in stories:
        ordered = [rows[jobs_by_task[task_id]] for task_id in story.task_ids]
        for earlier, later in itertools.pairwise(ordered):
            assert later["claimed_at"] >= earlier["finished_at"], (story.id, later["id"])
