"""A `reactor run` process is SIGKILLed while it holds jobs: another reactor rescues them."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
import trio

from handlers.errors import PermissionDenied
from handlers.heartbeat import job_heartbeat
from handlers.transition import StatusReport, update_job_status
from handlers.workspace import Workspace
from reactor.db import Database
from tests.factory import add_story, enqueue, make_world
from tests.reliability.support import jobs_by_id, process_group, sql
from tests.running import Collector, running_reactor, settings_for, worker_for
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(90)

LEASE = 3
EVERYTHING = sql("SELECT * FROM claude_jobs WHERE id = ANY($1::text[]) ORDER BY id")


async def test_a_sigkilled_reactors_jobs_are_rescued_by_another_and_its_late_writes_refused(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    jobs = [await enqueue(db, world, (await add_story(db, world)).task_ids[0]) for _ in range(2)]
    with process_group(tmp_path / "procs", dsn, world.token) as group:
        dead = group.start(
            "dead-a",
            "sleep 600",
            REACTOR_LEASE_SECONDS=str(LEASE),
            REACTOR_CONCURRENCY="2",
        )

        async def both_running_in_a() -> bool:
            dead.alive()  # fails fast if the process died
            rows = await jobs_by_id(db, jobs)
            return len(rows) == 2 and all(
                (r["status"], r["worker_instance_id"]) == ("RUNNING", "dead-a")
                for r in rows.values()
            )

        def agent_groups() -> set[int]:
            """Process groups of A's agents (each runs in a session of its own)."""
            children = psutil.Process(dead.popen.pid).children(recursive=True)
            return {os.getpgid(child.pid) for child in children if child.name() == "sleep"}

        await eventually(both_running_in_a, within=30)
        # RUNNING is stored just before the agent starts: wait for the agents themselves.
        await eventually(lambda: len(agent_groups()) == 2, within=10)
        agents = group.sigkill(dead)
        killed_at = trio.current_time()
        # Its two agents outlive it; the teardown kills them.
        assert len([agent for agent in agents if agent.is_running()]) >= 2
        collector = Collector(slots=2)
        home = tmp_path / "b"
        home.mkdir()
        settings = settings_for(dsn, world.token, home, REACTOR_LEASE_SECONDS=str(LEASE))
        async with running_reactor(db, settings, world, instance="live-b") as live:
            live.pump.add(collector)
            # Nothing polls every second here: B sleeps until the earliest known lease expiry.
            await collector.wait_for(2, within=LEASE + 10)
            rescued_after = trio.current_time() - killed_at
        assert sorted(collector.ids) == sorted(jobs)
        assert rescued_after <= LEASE + 3, f"rescued {rescued_after:.1f}s after the kill"
        rows = await jobs_by_id(db, jobs)
        assert {
            (r["status"], r["retry_count"], r["worker_instance_id"]) for r in rows.values()
        } == {("CLAIMED", 1, "live-b")}

        # The dead reactor's agents are still alive and would now report with its identity.
        ghost = await worker_for(db, world, "dead-a")
        ws = Workspace.from_settings(settings)
        before = await db.fetch(EVERYTHING, jobs)
        for job_id in jobs:
            for report in (
                StatusReport(job_id, "done", summary="late"),
                StatusReport(job_id, "failed", error="late failure"),
                StatusReport(job_id, "running"),
            ):
                with pytest.raises(PermissionDenied, match="held by another worker instance"):
                    await update_job_status(db, ws, ghost, report, kinds=settings.kinds)
            with pytest.raises(PermissionDenied, match="held by another worker instance"):
                await job_heartbeat(db, ghost, job_id, lease_seconds=600)
        assert await db.fetch(EVERYTHING, jobs) == before
