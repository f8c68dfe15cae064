"""The notify triggers: fire on commit only, carry ids only, fold bulk enqueues."""

from __future__ import annotations

import contextlib
import json

from reactor.db import Database
from reactor.ids import new_cuid
from reactor.sqlfiles import Query, query
from tests.factory import add_story, enqueue, make_world
from tests.inbox import Inbox

CHANNELS = ["job_enqueued", "job_status_changed", "worker_connected"]


def sql(text: str) -> Query:
    return Query("test", text)


async def test_committed_insert_sends_one_job_enqueued_with_ids_only(
    db: Database, dsn: str
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    async with Inbox(dsn, CHANNELS) as inbox:
        job_id = await enqueue(db, world, story.task_ids[0])
        channel, payload = await inbox.next()
        assert channel == "job_enqueued"
        assert payload == {
            "job_id": job_id,
            "user_id": world.user_id,
            "product_id": world.product_id,
            "kind": "TASK_IMPLEMENTATION",
        }
        assert await inbox.drain(db) == []


async def test_rolled_back_insert_sends_nothing(db: Database, dsn: str) -> None:
    world = await make_world(db)
    story = await add_story(db, world)

    class Abort(Exception):
        pass

    async def insert_then_fail(tx: object) -> None:
        await tx.fetchrow(  # type: ignore[attr-defined]
            query("seed.enqueue_job"),
            new_cuid(),
            world.user_id,
            world.product_id,
            story.task_ids[0],
            None,
            "TASK_IMPLEMENTATION",
            None,
        )
        raise Abort

    async with Inbox(dsn, CHANNELS) as inbox:
        with contextlib.suppress(Abort):
            await db.transaction(insert_then_fail)
        assert await inbox.drain(db) == []
    assert await db.fetchval(sql("SELECT count(*) FROM claude_jobs")) == 0


async def test_a_thousand_inserts_in_one_transaction_wake_once(db: Database, dsn: str) -> None:
    world = await make_world(db)
    story = await add_story(db, world)

    async def bulk(tx: object) -> None:
        for _ in range(1000):
            await tx.fetchrow(  # type: ignore[attr-defined]
                query("seed.enqueue_job"),
                new_cuid(),
                world.user_id,
                world.product_id,
                story.task_ids[0],
                None,
                "TASK_IMPLEMENTATION",
                None,
            )

    async with Inbox(dsn, CHANNELS) as inbox:
        await db.transaction(bulk)
        received = await inbox.drain(db)
    assert [channel for channel, _ in received] == ["job_enqueued"]
    assert await db.fetchval(sql("SELECT count(*) FROM claude_jobs")) == 1000


async def test_a_multi_row_insert_wakes_once_per_product(db: Database, dsn: str) -> None:
    first = await make_world(db)
    second = await make_world(db)
    async with Inbox(dsn, CHANNELS) as inbox:
        await db.execute(
            sql(
                "INSERT INTO claude_jobs (id, user_id, product_id, kind, updated_at) "
                "SELECT 'j' || g || $3, CASE WHEN g % 2 = 0 THEN $1 ELSE $2 END, "
                "CASE WHEN g % 2 = 0 THEN $4 ELSE $5 END, 'PLAN_CHAT', now() "
                "FROM generate_series(1, 500) g"
            ),
            first.user_id,
            second.user_id,
            new_cuid(),
            first.product_id,
            second.product_id,
        )
        received = await inbox.drain(db)
    assert sorted(p["product_id"] for _, p in received) == sorted(
        [first.product_id, second.product_id]
    )


async def test_requeue_sends_job_enqueued_and_status_change(db: Database, dsn: str) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    job_id = await enqueue(db, world, story.task_ids[0])
    await db.execute(sql("UPDATE claude_jobs SET status = 'CLAIMED' WHERE id = $1"), job_id)
    async with Inbox(dsn, CHANNELS) as inbox:
        await db.execute(sql("UPDATE claude_jobs SET status = 'QUEUED' WHERE id = $1"), job_id)
        received = dict(await inbox.drain(db))
    assert received["job_enqueued"]["job_id"] == job_id
    assert received["job_status_changed"] == {
        "job_id": job_id,
        "user_id": world.user_id,
        "product_id": world.product_id,
        "task_id": story.task_ids[0],
        "kind": "TASK_IMPLEMENTATION",
        "old_status": "CLAIMED",
        "new_status": "QUEUED",
    }


async def test_status_change_payload_is_small_and_same_status_update_is_silent(
    db: Database, dsn: str
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    job_id = await enqueue(db, world, story.task_ids[0])
    async with Inbox(dsn, CHANNELS) as inbox:
        await db.execute(
            sql(
                "UPDATE claude_jobs SET status = 'FAILED', error = repeat('x', 5000) WHERE id = $1"
            ),
            job_id,
        )
        await db.execute(
            sql("UPDATE claude_jobs SET status = 'FAILED', summary = 'y' WHERE id = $1"), job_id
        )
        received = await inbox.drain(db)
    assert len(received) == 1
    channel, payload = received[0]
    assert channel == "job_status_changed"
    assert payload["new_status"] == "FAILED"
    assert len(json.dumps(payload)) < 1024
    assert "xxxx" not in json.dumps(payload)


async def test_worker_connected_on_insert_and_on_return_from_stale_only(
    db: Database, dsn: str
) -> None:
    world = await make_world(db)
    worker_id = new_cuid()
    async with Inbox(dsn, CHANNELS) as inbox:
        await db.execute(
            sql(
                "INSERT INTO claude_workers (id, user_id, token_id, instance_id) "
                "VALUES ($1, $2, $3, 'w1')"
            ),
            worker_id,
            world.user_id,
            world.token_id,
        )
        channel, payload = await inbox.next()
        assert (channel, payload) == (
            "worker_connected",
            {"worker_id": worker_id, "user_id": world.user_id, "instance_id": "w1"},
        )
        # A routine heartbeat is silent; a heartbeat after 30 s of silence is a reconnect.
        await db.execute(
            sql("UPDATE claude_workers SET last_seen_at = last_seen_at + interval '10 seconds'")
        )
        assert await inbox.drain(db) == []
        await db.execute(
            sql("UPDATE claude_workers SET last_seen_at = last_seen_at + interval '45 seconds'")
        )
        received = await inbox.drain(db)
    assert [channel for channel, _ in received] == ["worker_connected"]
