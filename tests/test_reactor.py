"""The reactor against a real PostgreSQL: wake-ups, claim rules, leases, rescue, presence."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from handlers import presence
from handlers.claim import claim_job, renew_leases, rescue_expired
from reactor import metrics
from reactor.db import Database
from reactor.listener import ListenerState
from reactor.runtime import Reactor
from reactor.sqlfiles import Query
from tests.factory import World, add_sprint_run, add_story, enqueue, make_world
from tests.running import Collector, running_reactor, settings_for, worker_for
from tests.waiting import eventually


def sql(text: str) -> Query:
    return Query("test", text)


async def status_of(db: Database, job_id: str) -> str:
    return str(await db.fetchval(sql("SELECT status::text FROM claude_jobs WHERE id = $1"), job_id))


async def finish(db: Database, job_id: str, status: str = "DONE") -> None:
    await db.execute(
        sql(
            'UPDATE claude_jobs SET status = $2::"ClaudeJobStatus", finished_at = now() '
            "WHERE id = $1"
        ),
        job_id,
        status,
    )


async def test_a_committed_insert_is_claimed_without_waiting_for_the_sweep(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    collector = Collector()
    async with running_reactor(db, settings_for(dsn, world.token, tmp_path), world) as reactor:
        reactor.pump.add(collector)
        start = trio.current_time()
        job_id = await enqueue(db, world, story.task_ids[0])
        jobs = await collector.wait_for(1, within=5)
        assert trio.current_time() - start < 5  # the sweep is 60 s away: the NOTIFY did it
    assert jobs[0].id == job_id
    row = await db.fetchrow(
        sql(
            "SELECT status::text, claimed_by_token_id, worker_instance_id, plan_snapshot, "
            "lease_until > now() + interval '4 minutes' AS leased FROM claude_jobs WHERE id = $1"
        ),
        job_id,
    )
    assert row is not None
    assert (row["status"], row["claimed_by_token_id"], row["worker_instance_id"]) == (
        "CLAIMED",
        world.token_id,
        "test-1",
    )
    assert row["plan_snapshot"] == "Do it."
    assert row["leased"]


@dataclass
class Unannounced:
    world: World
    reactor: Reactor
    collector: Collector
    job_id: str


@contextlib.asynccontextmanager
async def an_unannounced_job(db: Database, dsn: str, tmp_path: Path) -> AsyncIterator[Unannounced]:
    """A running reactor with a free consumer, and a QUEUED job nothing has announced: our
    enqueue triggers are off in this test's database, and the reactor has no presence row
    (its worker_connected would wake the pump). The sweep is 60 s away."""
    world = await make_world(db)
    story = await add_story(db, world)
    await db.execute(sql("ALTER TABLE claude_jobs DISABLE TRIGGER reactor_job_enqueued_insert_v1"))
    await db.execute(sql("ALTER TABLE claude_jobs DISABLE TRIGGER reactor_job_enqueued_update_v1"))
    collector = Collector()
    settings = settings_for(dsn, world.token, tmp_path)
    async with running_reactor(db, settings, world, presence=False) as reactor:
        reactor.pump.add(collector)
        await reactor.pump.wait_quiet()  # the pass that adding a consumer asks for is over
        job_id = await enqueue(db, world, story.task_ids[0])
        await reactor.pump.wait_quiet()
        assert collector.jobs == []
        yield Unannounced(world, reactor, collector, job_id)


async def test_the_apps_own_enqueue_notification_wakes_a_claim(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    # A Scrum4Me app that announces enqueues itself on scrum4me_changes (as it does for
    # scrum4me-mcp) is heard even where our triggers are missing.
    async with an_unannounced_job(db, dsn, tmp_path) as case:
        payload = json.dumps(
            {"type": "claude_job_enqueued", "job_id": case.job_id, "user_id": case.world.user_id,
             "product_id": case.world.product_id, "kind": "TASK_IMPLEMENTATION"}
        )  # fmt: skip
        await db.execute(sql("SELECT pg_notify('scrum4me_changes', $1)"), payload)
        jobs = await case.collector.wait_for(1, within=5)
    assert jobs[0].id == case.job_id


async def test_a_worker_connecting_runs_a_dispatch_pass(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    async with an_unannounced_job(db, dsn, tmp_path) as case:
        newcomer = await worker_for(db, case.world, "laptop-7")
        await presence.register(db, newcomer, hostname="laptop")  # worker_connected
        jobs = await case.collector.wait_for(1, within=5)
        assert "laptop-7" in case.reactor.state.live_workers
    assert jobs[0].id == case.job_id


async def test_a_rolled_back_insert_wakes_nothing(db: Database, dsn: str, tmp_path: Path) -> None:
    world = await make_world(db)
    other = await make_world(db)
    story = await add_story(db, world)
    other_story = await add_story(db, other)
    collector = Collector()
    async with running_reactor(db, settings_for(dsn, world.token, tmp_path), world) as reactor:
        reactor.pump.add(collector)
        await reactor.pump.wait_quiet()
        passes = reactor.pump.passes

        class Abort(Exception):
            pass

        async def insert_and_abort(tx: object) -> None:
            await tx.fetchrow(  # type: ignore[attr-defined]
                Query(
                    "seed",
                    "INSERT INTO claude_jobs (id, user_id, product_id, task_id, updated_at) "
                    "VALUES ('rolled-back', $1, $2, $3, now())",
                ),
                world.user_id,
                world.product_id,
                story.task_ids[0],
            )
            raise Abort

        with contextlib.suppress(Abort):
            await db.transaction(insert_and_abort)
        # Another user's committed enqueue: once the reactor has handled it, it has handled
        # everything committed before it (notifications arrive in commit order).
        before = reactor.dispatcher.processed
        await enqueue(db, other, other_story.task_ids[0])
        with trio.fail_after(5):
            await reactor.dispatcher.wait_processed(before + 1)
            await reactor.pump.wait_quiet()
        assert reactor.pump.passes == passes
    assert collector.jobs == []


async def test_story_tasks_run_in_order_while_stories_run_in_parallel(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story_a = await add_story(db, world, tasks=3)
    story_b = await add_story(db, world, tasks=1)
    a_jobs = [await enqueue(db, world, task_id) for task_id in story_a.task_ids]
    b_job = await enqueue(db, world, story_b.task_ids[0])
    collector = Collector(slots=4)
    async with running_reactor(db, settings_for(dsn, world.token, tmp_path), world) as reactor:
        reactor.pump.add(collector)
        await collector.wait_for(2)
        assert sorted(collector.ids) == sorted([a_jobs[0], b_job])
        for step in (1, 2):
            await finish(db, a_jobs[step - 1])
            collector.release(a_jobs[step - 1])
            await collector.wait_for(2 + step)
            assert collector.ids[-1] == a_jobs[step]
    assert collector.ids[:2] in ([a_jobs[0], b_job], [b_job, a_jobs[0]])


async def test_a_failed_story_head_lets_its_successor_run_and_waits_for_it_when_retried(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    # A failed head does not block its story. Retried by the UI while its successor runs on
    # the story branch, it waits: two jobs of one story never run at once.
    world = await make_world(db)
    story = await add_story(db, world, tasks=2)
    first, second = [await enqueue(db, world, task_id) for task_id in story.task_ids]
    collector = Collector(slots=3)
    async with running_reactor(db, settings_for(dsn, world.token, tmp_path), world) as reactor:
        reactor.pump.add(collector)
        await collector.wait_for(1)
        await finish(db, first, "FAILED")
        await collector.wait_for(2)
        assert collector.ids == [first, second]
        await db.execute(
            sql("UPDATE claude_jobs SET status = 'QUEUED', updated_at = now() WHERE id = $1"),
            first,
        )
        await reactor.pump.wait_quiet()
        reactor.pump.wake("test: after the retry")
        await reactor.pump.wait_quiet()
        assert collector.ids == [first, second]
        await finish(db, second, "DONE")
        await collector.wait_for(3)
    assert collector.ids == [first, second, first]


async def claims_in_a_row(db: Database, world: World, count: int) -> list[str | None]:
    """The ids ``count`` claims in a row return (None: nothing was claimable)."""
    worker = await worker_for(db, world, "w1")
    ids: list[str | None] = []
    for _ in range(count):
        job = await claim_job(
            db, worker, kinds=["TASK_IMPLEMENTATION"], product_id=None, lease_seconds=300,
            consumer="test",
        )  # fmt: skip
        ids.append(job.id if job else None)
    return ids


async def test_a_job_whose_id_could_escape_the_job_directories_is_never_claimed(
    db: Database,
) -> None:
    world = await make_world(db)
    hostile_story, good_story = await add_story(db, world), await add_story(db, world)
    hostile = await enqueue(db, world, hostile_story.task_ids[0])
    await db.execute(sql("UPDATE claude_jobs SET id = '../../etc/x' WHERE id = $1"), hostile)
    good = await enqueue(db, world, good_story.task_ids[0])
    assert await claims_in_a_row(db, world, 2) == [good, None]
    assert await status_of(db, "../../etc/x") == "QUEUED"


async def test_a_job_that_requires_a_capability_we_lack_is_left_alone(db: Database) -> None:
    world = await make_world(db)
    deploy, review = await add_story(db, world), await add_story(db, world)
    for_deployers = await enqueue(db, world, deploy.task_ids[0])
    for_reviewers = await enqueue(db, world, review.task_ids[0])
    set_capability = sql("UPDATE claude_jobs SET required_capability = $2 WHERE id = $1")
    await db.execute(set_capability, for_deployers, "deploy")
    await db.execute(set_capability, for_reviewers, "review")  # registered by every worker
    assert await claims_in_a_row(db, world, 2) == [for_reviewers, None]
    assert await status_of(db, for_deployers) == "QUEUED"


def test_the_sql_floor_of_the_benchmarks_claims_with_our_capabilities() -> None:
    from bench import peer_workers
    from handlers.presence import CAPABILITIES

    assert peer_workers.CAPABILITIES == CAPABILITIES


async def test_sprint_sequence_barrier_and_run_state(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story_1 = await add_story(db, world)
    story_2 = await add_story(db, world)
    run_id = await add_sprint_run(db, world)
    # The later sequence number is enqueued first: the barrier, not age, decides.
    second = await enqueue(db, world, story_2.task_ids[0], sprint_run_id=run_id, sequence=2)
    first = await enqueue(db, world, story_1.task_ids[0], sprint_run_id=run_id, sequence=1)
    worker = await worker_for(db, world, "barrier")
    kinds = ["TASK_IMPLEMENTATION"]
    claimed = await claim_job(
        db, worker, kinds=kinds, product_id=None, lease_seconds=300, consumer="t"
    )
    assert claimed is not None
    assert claimed.id == first
    assert (
        await db.fetchval(sql("SELECT status::text FROM sprint_runs WHERE id = $1"), run_id)
        == "RUNNING"
    )
    assert (
        await claim_job(db, worker, kinds=kinds, product_id=None, lease_seconds=300, consumer="t")
        is None
    )
    await finish(db, first)
    await db.execute(sql("UPDATE sprint_runs SET status = 'PAUSED' WHERE id = $1"), run_id)
    assert (
        await claim_job(db, worker, kinds=kinds, product_id=None, lease_seconds=300, consumer="t")
        is None
    )
    await db.execute(sql("UPDATE sprint_runs SET status = 'RUNNING' WHERE id = $1"), run_id)
    claimed = await claim_job(
        db, worker, kinds=kinds, product_id=None, lease_seconds=300, consumer="t"
    )
    assert claimed is not None
    assert claimed.id == second


async def test_claim_respects_user_product_runtime_and_kind(db: Database) -> None:
    world = await make_world(db)
    other = await make_world(db)
    story = await add_story(db, world)
    worker = await worker_for(db, world, "filters")
    foreign = await enqueue(db, other, (await add_story(db, other)).task_ids[0])
    codex = await enqueue(db, world, story.task_ids[0])
    await db.execute(sql("UPDATE claude_jobs SET runtime = 'CODEX' WHERE id = $1"), codex)
    review = await enqueue(db, world, None, kind="PLAN_CHAT")
    kinds = ["TASK_IMPLEMENTATION"]
    assert (
        await claim_job(db, worker, kinds=kinds, product_id=None, lease_seconds=300, consumer="t")
        is None
    )
    claimed = await claim_job(
        db,
        worker,
        kinds=["PLAN_CHAT"],
        product_id=other.product_id,
        lease_seconds=300,
        consumer="t",
    )
    assert claimed is None
    claimed = await claim_job(
        db,
        worker,
        kinds=["PLAN_CHAT"],
        product_id=world.product_id,
        lease_seconds=300,
        consumer="t",
    )
    assert claimed is not None
    assert claimed.id == review
    assert (
        await db.fetchval(sql("SELECT plan_snapshot FROM claude_jobs WHERE id = $1"), review) == ""
    )
    assert await status_of(db, foreign) == "QUEUED"
    assert await status_of(db, codex) == "QUEUED"


async def test_lease_expiry_requeues_twice_then_fails(db: Database) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    job_id = await enqueue(db, world, story.task_ids[0])
    kinds = ["TASK_IMPLEMENTATION"]
    for attempt in range(3):
        worker = await worker_for(db, world, f"attempt-{attempt}")
        claimed = await claim_job(
            db, worker, kinds=kinds, product_id=None, lease_seconds=300, consumer="t"
        )
        assert claimed is not None
        assert (claimed.id, claimed.retry_count) == (job_id, attempt)
        await db.execute(sql("UPDATE claude_jobs SET lease_until = now() - interval '1 second'"))
        report = await rescue_expired(db, world.user_id, kinds=kinds, max_retries=2)
        assert [(r.job_id, r.outcome) for r in report.rescued] == [
            (job_id, "QUEUED" if attempt < 2 else "FAILED")
        ]
    row = await db.fetchrow(
        sql(
            "SELECT status::text, retry_count, error, worker_instance_id "
            "FROM claude_jobs WHERE id = $1"
        ),
        job_id,
    )
    assert row is not None
    assert (row["status"], row["retry_count"]) == ("FAILED", 2)
    assert "lease expired 3 times" in row["error"]
    assert row["worker_instance_id"] == "attempt-2"  # kept for forensics


async def test_a_rescued_workers_late_lease_renewal_changes_nothing(db: Database) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    job_id = await enqueue(db, world, story.task_ids[0])
    kinds = ["TASK_IMPLEMENTATION"]
    old = await worker_for(db, world, "old")
    new = await worker_for(db, world, "new")  # same token, another instance
    assert await claim_job(db, old, kinds=kinds, product_id=None, lease_seconds=300, consumer="t")
    await db.execute(sql("UPDATE claude_jobs SET lease_until = now() - interval '1 second'"))
    await rescue_expired(db, world.user_id, kinds=kinds, max_retries=2)
    assert await claim_job(db, new, kinds=kinds, product_id=None, lease_seconds=300, consumer="t")
    lease_before = await db.fetchval(
        sql("SELECT lease_until FROM claude_jobs WHERE id = $1"), job_id
    )
    assert await renew_leases(db, old, [job_id], 600) == set()
    assert (
        await db.fetchval(sql("SELECT lease_until FROM claude_jobs WHERE id = $1"), job_id)
        == lease_before
    )
    assert (
        await db.fetchval(sql("SELECT worker_instance_id FROM claude_jobs WHERE id = $1"), job_id)
        == "new"
    )


async def test_the_rescuer_never_overwrites_a_completion_in_flight(db: Database, dsn: str) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    job_id = await enqueue(db, world, story.task_ids[0])
    worker = await worker_for(db, world, "racer")
    kinds = ["TASK_IMPLEMENTATION"]
    assert await claim_job(
        db, worker, kinds=kinds, product_id=None, lease_seconds=300, consumer="t"
    )
    await db.execute(sql("UPDATE claude_jobs SET lease_until = now() - interval '1 second'"))
    completer = await Database.connect(dsn, max_size=1, application_name="completer")
    holding = sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'completer' "
        "AND state = 'active' AND query LIKE '%pg_sleep%'"
    )

    async def complete(tx: object) -> None:
        # The completion holds the row lock (server-side sleep) while the rescuer runs.
        await tx.execute(sql("UPDATE claude_jobs SET status = 'DONE' WHERE id = $1"), job_id)  # type: ignore[attr-defined]
        await tx.execute(sql("SELECT pg_sleep(1.5)"))  # type: ignore[attr-defined]

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(completer.transaction, complete)
            await eventually(lambda: db.fetchval(holding))
            report = await rescue_expired(db, world.user_id, kinds=kinds, max_retries=2)
    finally:
        await completer.close()
    assert report.rescued == []
    assert await status_of(db, job_id) == "DONE"


async def test_listener_killed_while_jobs_are_inserted_loses_none(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    stories = [await add_story(db, world) for _ in range(12)]
    collector = Collector(slots=100)
    async with running_reactor(db, settings_for(dsn, world.token, tmp_path), world) as reactor:
        reactor.pump.add(collector)
        jobs = [await enqueue(db, world, stories[i].task_ids[0]) for i in range(4)]
        await collector.wait_for(4)
        pid = reactor.listener.backend_pid
        await db.fetchval(sql("SELECT pg_terminate_backend($1)"), pid)
        jobs += [await enqueue(db, world, stories[i].task_ids[0]) for i in range(4, 12)]
        await collector.wait_for(12, within=10)
        assert reactor.listener.status.reconnects >= 1
        assert reactor.listener.backend_pid != pid
    assert sorted(collector.ids) == sorted(jobs)
    assert len(set(collector.ids)) == 12


async def test_a_malformed_payload_is_dropped_and_the_listener_lives_on(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    collector = Collector()
    dropped = metrics.NOTIFICATIONS_DROPPED.labels("malformed")._value.get()
    async with running_reactor(db, settings_for(dsn, world.token, tmp_path), world) as reactor:
        reactor.pump.add(collector)
        for payload in ("not json", "[1,2]", json.dumps({"user_id": "../../etc"}), "{" * 5000):
            await db.fetchval(sql("SELECT pg_notify('job_enqueued', $1)"), payload)
        job_id = await enqueue(db, world, story.task_ids[0])
        await collector.wait_for(1)
        assert reactor.listener.status.state is ListenerState.HEALTHY
    assert collector.ids == [job_id]
    assert metrics.NOTIFICATIONS_DROPPED.labels("malformed")._value.get() - dropped == 4


async def test_unlisten_behind_the_listeners_back_is_detected_and_repaired(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    collector = Collector()
    settings = settings_for(
        dsn, world.token, tmp_path, REACTOR_PING_SECONDS="0.5", REACTOR_PING_TIMEOUT_SECONDS="0.4"
    )
    async with running_reactor(db, settings, world) as reactor:
        reactor.pump.add(collector)
        session = reactor.listener.session
        assert session is not None
        await session.fetchrow(sql("UNLISTEN *"))
        await eventually(
            lambda: (
                reactor.listener.status.reconnects > 0
                and reactor.listener.status.state is ListenerState.HEALTHY
            )
        )
        job_id = await enqueue(db, world, story.task_ids[0])
        await collector.wait_for(1)
    assert collector.ids == [job_id]


@pytest.mark.skipif(os.geteuid() != 0, reason="stopping a server backend needs root")
async def test_a_stalled_listener_backend_is_detected_by_the_ping(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    settings = settings_for(
        dsn, world.token, tmp_path, REACTOR_PING_SECONDS="0.5", REACTOR_PING_TIMEOUT_SECONDS="0.4"
    )
    async with running_reactor(db, settings, world, presence=False) as reactor:
        pid = reactor.listener.backend_pid
        assert pid is not None
        if "127.0.0.1" not in dsn and "host=/" not in dsn:
            pytest.skip("the server is not local")
        os.kill(pid, signal.SIGSTOP)
        try:
            await eventually(lambda: reactor.listener.backend_pid not in (pid, None))
            assert "no answer to the listener ping" in str(
                reactor.listener.status.last_error or ""
            ) or (reactor.listener.status.reconnects >= 1)
        finally:
            os.kill(pid, signal.SIGCONT)


async def test_a_burst_of_notifications_costs_at_most_one_claim_per_free_slot(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    stories = [await add_story(db, world) for _ in range(40)]
    collector = Collector(slots=2)
    async with running_reactor(db, settings_for(dsn, world.token, tmp_path), world) as reactor:
        reactor.pump.add(collector)
        await reactor.pump.wait_quiet()
        attempts = reactor.pump.claim_attempts
        before = reactor.dispatcher.processed
        for story in stories:
            await enqueue(db, world, story.task_ids[0])
        with trio.fail_after(10):
            await reactor.dispatcher.wait_processed(before + 40)
            await reactor.pump.wait_quiet()
        await collector.wait_for(2)
        assert reactor.pump.claim_attempts - attempts <= 2
    assert len(collector.jobs) == 2


async def test_two_reactors_claim_five_hundred_jobs_exactly_once(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    stories = [await add_story(db, world) for _ in range(50)]
    first, second = Collector(slots=10_000), Collector(slots=10_000)
    settings = settings_for(dsn, world.token, tmp_path)
    async with (
        running_reactor(db, settings, world, instance="r1") as r1,
        running_reactor(db, settings, world, instance="r2") as r2,
    ):
        r1.pump.add(first)
        r2.pump.add(second)
        jobs: list[str] = []
        for round_ in range(10):
            jobs += [
                await enqueue(db, world, story.task_ids[0], kind="PLAN_CHAT") for story in stories
            ]
            del round_
        # PLAN_CHAT is not configured: nothing may be claimed.
        assert first.jobs == second.jobs == []
        await db.execute(sql("UPDATE claude_jobs SET kind = 'TASK_IMPLEMENTATION', task_id = NULL"))
        r1.request_sweep("test")
        r2.request_sweep("test")
        await eventually(lambda: len(first.jobs) + len(second.jobs) >= 500, within=20)
    claimed = first.ids + second.ids
    assert len(claimed) == 500
    assert sorted(claimed) == sorted(jobs)
    assert first.jobs, "both reactors take part"
    assert second.jobs, "both reactors take part"


async def test_presence_row_is_registered_self_heals_and_is_removed_on_stop(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    settings = settings_for(
        dsn, world.token, tmp_path, REACTOR_PING_SECONDS="0.5", REACTOR_PING_TIMEOUT_SECONDS="0.4"
    )
    count = sql(
        "SELECT count(*) FROM claude_workers WHERE token_id = $1 AND instance_id = 'test-1'"
    )
    async with running_reactor(db, settings, world):
        assert await db.fetchval(count, world.token_id) == 1
        await db.execute(sql("DELETE FROM claude_workers"))

        async def registered_again() -> bool:
            return bool(await db.fetchval(count, world.token_id))

        await eventually(registered_again)
    assert await db.fetchval(count, world.token_id) == 0


async def test_a_token_revoked_while_running_stops_claiming(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    collector = Collector()
    settings = settings_for(
        dsn, world.token, tmp_path, REACTOR_PING_SECONDS="0.5", REACTOR_PING_TIMEOUT_SECONDS="0.4"
    )
    async with running_reactor(db, settings, world) as reactor:
        reactor.pump.add(collector)
        await db.execute(
            sql("UPDATE api_tokens SET revoked_at = now() WHERE id = $1"), world.token_id
        )
        await eventually(lambda: not reactor.state.token_valid)
        job_id = await enqueue(db, world, story.task_ids[0])
        reactor.request_sweep("test")
        await reactor.dispatcher.wait_processed(reactor.dispatcher.processed)
        assert reactor.pump.paused_reason == "token revoked or expired"
    assert collector.jobs == []
    assert await status_of(db, job_id) == "QUEUED"


def test_registering_two_handlers_for_one_channel_is_an_error() -> None:
    from reactor.dispatch import Dispatcher

    async def handler(_event: object) -> None:
        return None

    dispatcher = Dispatcher(on_overflow=lambda: None)
    dispatcher.register("job_enqueued", handler)
    with pytest.raises(ValueError, match="already registered"):
        dispatcher.register("job_enqueued", handler)
    with pytest.raises(ValueError, match="already registered"):
        dispatcher.register_reflex("job_enqueued", lambda _event: None)
    dispatcher.register_reflex("scrum4me_changes", lambda _event: None)
    with pytest.raises(ValueError, match="already registered"):
        dispatcher.register("scrum4me_changes", handler)


def test_a_reflex_runs_in_the_callback_and_a_failing_one_is_contained() -> None:
    from reactor.dispatch import Dispatcher

    seen: list[object] = []

    def reflex(event: object) -> None:
        seen.append(event)
        raise RuntimeError("a broken reflex must not reach the listener callback")

    dispatcher = Dispatcher(on_overflow=lambda: None)
    dispatcher.register_reflex("job_enqueued", reflex)
    payload = json.dumps({"job_id": "j1", "user_id": "u1", "product_id": "p1", "kind": "X_Y"})
    dispatcher.deliver("job_enqueued", payload)  # no running task: it happened in the call
    dispatcher.deliver("job_enqueued", "not json")
    assert [getattr(event, "job_id", None) for event in seen] == ["j1"]
    assert dispatcher.processed == 2
