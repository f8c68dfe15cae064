"""Malformed notifications and hostile MCP tool inputs: refused, counted, nothing changed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from reactor import metrics
from reactor.db import Database
from reactor.listener import ListenerState
from tests.factory import World, add_story, enqueue, make_world
from tests.gitrepo import branches, make_setup
from tests.reliability.support import (
    get_json,
    mcp_client,
    process_group,
    running_daemon,
    sql,
    text_of,
)
from tests.running import settings_for
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(90)

CHANNELS = ("job_enqueued", "job_status_changed", "worker_connected", "scrum4me_changes")
NOTIFY = sql("SELECT pg_notify($1, $2)")
PAYLOAD_LIMIT = 7900  # PostgreSQL refuses 8000 bytes and more


def valid_payload(channel: str, world: World) -> dict[str, Any]:
    """A payload of the shape ``channel`` promises, about ``world``'s user."""
    ids = {"user_id": world.user_id, "product_id": world.product_id}
    if channel == "job_enqueued":
        return {"job_id": "cnosuchjob00000000000000", "kind": "TASK_IMPLEMENTATION", **ids}
    if channel == "job_status_changed":
        return {
            "job_id": "cnosuchjob00000000000000",
            "task_id": None,
            "kind": "TASK_IMPLEMENTATION",
            "old_status": "RUNNING",
            "new_status": "DONE",
            **ids,
        }
    if channel == "worker_connected":
        return {"worker_id": "cnosuchworker00000000000", "instance_id": "ghost", **ids}
    return {"type": "claude_job_enqueued", "job_id": "cnosuchjob00000000000000", **ids}


def oversized(base: dict[str, Any]) -> str:
    """``base`` with its user_id padded until the payload is exactly PAYLOAD_LIMIT bytes."""
    padded = {**base, "user_id": ""}
    room = PAYLOAD_LIMIT - len(json.dumps(padded))
    padded["user_id"] = "u" * room
    text = json.dumps(padded)
    assert len(text.encode()) == PAYLOAD_LIMIT
    return text


def malformed_payloads(channel: str, world: World) -> list[str]:
    base = valid_payload(channel, world)
    missing = {key: value for key, value in base.items() if key != "user_id"}
    hostile_ids: list[Any] = [
        "../../etc/passwd",
        "a\u0000b",
        "$(reboot)",
        "x; DROP TABLE claude_jobs",
        5,
        None,
        ["user"],
        {"$ne": ""},
    ]
    payloads = [
        "not json",
        "[1, 2, 3]",
        "null",
        "42",
        '"just a string"',
        "{" * 5000,
        json.dumps(missing),
        oversized(base),
        *(json.dumps({**base, "user_id": value}) for value in hostile_ids),
    ]
    if channel == "scrum4me_changes":
        payloads.append(json.dumps({**base, "kind": "lower_case"}))
    elif channel == "job_status_changed":
        payloads.append(json.dumps({**base, "new_status": "DONE; DELETE"}))
    elif channel == "job_enqueued":
        payloads.append(json.dumps({**base, "kind": 7}))
    return payloads


def dropped_malformed() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "reactor_notifications_dropped_total", {"reason": "malformed"}
    )
    return value or 0.0


TABLES = ("claude_jobs", "tasks", "stories")


async def snapshot(db: Database, worktrees: Path | None = None) -> dict[str, Any]:
    """Every row of the tables a tool could touch, plus the worktree directory's files."""
    state: dict[str, Any] = {
        table: [dict(row) for row in await db.fetch(sql(f"SELECT * FROM {table} ORDER BY id"))]
        for table in TABLES
    }
    if worktrees is not None:
        state["worktrees"] = await trio.to_thread.run_sync(tree_digest, worktrees)
    return state


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the sha256 of its content (files) or its kind."""
    digest = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            digest[str(path)] = "link -> " + os.readlink(path)
        elif path.is_file():
            digest[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            digest[str(path)] = "dir"
    return digest


async def test_malformed_notifications_on_every_channel_are_dropped_and_claiming_goes_on(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    other = await make_world(db)
    story = await add_story(db, world)
    settings = settings_for(
        dsn, world.token, tmp_path, REACTOR_HEALTH_PORT="0", REACTOR_WORKTREES="off"
    )
    malformed = [(c, p) for c in CHANNELS for p in malformed_payloads(c, world)]
    # Well-formed lies: about another user, or about a job that does not exist.
    harmless = [(c, json.dumps(valid_payload(c, other))) for c in CHANNELS]
    harmless += [(c, json.dumps(valid_payload(c, world))) for c in CHANNELS]
    async with running_daemon(settings, db) as daemon:
        reactor = daemon.reactor
        before = await snapshot(db)
        dropped = dropped_malformed()
        processed = reactor.dispatcher.processed
        for channel, payload in malformed + harmless:
            await db.fetchval(NOTIFY, channel, payload)
        with trio.fail_after(10):
            await reactor.dispatcher.wait_processed(processed + len(malformed) + len(harmless))
        assert dropped_malformed() - dropped == len(malformed)
        status = reactor.listener.status
        assert (status.state, status.reconnects) == (ListenerState.HEALTHY, 0)
        code, health = await trio.to_thread.run_sync(get_json, daemon.port, "/health")
        assert (code, health["status"], health["listener"]["state"]) == (200, "idle", "healthy")
        assert await snapshot(db) == before
        async with mcp_client(daemon.port, world.token) as client:
            job_id = await enqueue(db, world, story.task_ids[0])
            got = await client.call_tool("wait_for_job", {"wait_seconds": 10})
    assert not got.is_error, text_of(got)
    assert json.loads(text_of(got))["job_id"] == job_id


async def test_a_deeply_nested_payload_is_dropped_and_the_daemon_process_survives(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    with process_group(tmp_path / "procs", dsn, world.token) as group:
        process = group.start("nested", "true")
        await eventually(process.ready, within=30)
        # 3,000 bytes, far below the payload limit; anyone allowed to NOTIFY can send it.
        await db.fetchval(NOTIFY, "job_enqueued", "[" * 3000)
        job_id = await enqueue(db, world, story.task_ids[0])

        async def done() -> bool:
            process.alive()
            status = await db.fetchval(
                sql("SELECT status::text FROM claude_jobs WHERE id = $1"), job_id
            )
            return bool(status == "DONE")

        await eventually(done, within=20)
        assert process.alive()


def hostile_calls(
    world: World, mine: str, foreign: str, other_product: str
) -> list[tuple[str, dict[str, Any], str]]:
    """(tool, arguments, expected start of the refusal)."""
    big = "x" * 10_240
    bad_ids = ["../../etc/passwd", "a\u0000b", "$(reboot)", "`id`", "a;rm -rf /", big]
    calls: list[tuple[str, dict[str, Any], str]] = [
        ("wait_for_job", {"wait_seconds": 10**12}, "VALIDATION_ERROR: wait_seconds"),
        ("wait_for_job", {"wait_seconds": 2**80}, "VALIDATION_ERROR: wait_seconds"),
        ("wait_for_job", {"wait_seconds": 1e308}, "VALIDATION_ERROR: wait_seconds"),
        ("wait_for_job", {"wait_seconds": -1}, "VALIDATION_ERROR: wait_seconds"),
        ("wait_for_job", {"wait_seconds": "600; rm -rf /"}, "VALIDATION_ERROR: wait_seconds"),
        ("wait_for_job", {"wait_seconds": [600]}, "VALIDATION_ERROR: wait_seconds"),
        ("wait_for_job", {"product_id": 12345}, "VALIDATION_ERROR: product_id"),
        ("wait_for_job", {"capability": "ROOT"}, "VALIDATION_ERROR: capability"),
        ("update_job_status", {"job_id": mine, "status": "DONE"}, "VALIDATION_ERROR: status"),
        ("update_job_status", {"job_id": mine}, "VALIDATION_ERROR: status"),
        (
            "update_job_status",
            {"job_id": mine, "status": "done", "summary": "s" * 1_000_000},
            "VALIDATION_ERROR: summary",
        ),
        (
            "update_job_status",
            {"job_id": mine, "status": "failed", "error": "e" * 100_000},
            "VALIDATION_ERROR: error",
        ),
        (
            "update_job_status",
            {"job_id": mine, "status": "done", "input_tokens": 2**31},
            "VALIDATION_ERROR: input_tokens",
        ),
        (
            "update_job_status",
            {"job_id": mine, "status": "done", "output_tokens": "lots"},
            "VALIDATION_ERROR: output_tokens",
        ),
        (
            "update_job_status",
            {"job_id": mine, "status": "done", "model_id": big},
            "VALIDATION_ERROR: model_id",
        ),
        ("update_job_status", {"job_id": 42, "status": "done"}, "VALIDATION_ERROR: job_id"),
        ("update_job_status", {"job_id": None, "status": "done"}, "VALIDATION_ERROR: job_id"),
        ("job_heartbeat", {"job_id": {"$ne": ""}}, "VALIDATION_ERROR: job_id"),
        ("job_heartbeat", {}, "VALIDATION_ERROR: job_id"),
        ("check_queue_empty", {"product_id": other_product}, "Product "),
        # Unknown fields are ignored, and never buy another identity or another user's job.
        (
            "update_job_status",
            {
                "job_id": foreign,
                "status": "done",
                "user_id": world.user_id,
                "instance_id": "http-" + world.token_id,
                "claimed_by_token_id": world.token_id,
            },
            "PERMISSION_DENIED: ",
        ),
        ("job_heartbeat", {"job_id": foreign, "token": "s4m_x"}, "PERMISSION_DENIED: "),
    ]
    for branch in ("--force", "main; rm -rf /", "../../x", "a\u0000b", "x" * 300):
        calls.append(
            (
                "update_job_status",
                {"job_id": mine, "status": "done", "branch": branch},
                "VALIDATION_ERROR: branch",
            )
        )
    for value in bad_ids:
        calls += [
            ("wait_for_job", {"product_id": value}, "VALIDATION_ERROR: product_id"),
            ("update_job_status", {"job_id": value, "status": "done"}, "VALIDATION_ERROR: job_id"),
            ("job_heartbeat", {"job_id": value}, "VALIDATION_ERROR: job_id"),
            ("check_queue_empty", {"product_id": value}, "VALIDATION_ERROR: product_id"),
        ]
    return calls


async def test_hostile_tool_inputs_are_refused_with_the_right_prefix_and_change_nothing(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db, repo_url="https://git.example.invalid/acme/app.git")
    other = await make_world(db)
    setup = make_setup(tmp_path / "repo")
    mine_story, spare_story = await add_story(db, world), await add_story(db, world)
    foreign = await enqueue(db, other, (await add_story(db, other)).task_ids[0])
    settings = settings_for(
        dsn,
        world.token,
        tmp_path,
        REACTOR_HEALTH_PORT="0",
        SCRUM4ME_INSTANCE_ID="hostile-host",
        SCRUM4ME_AGENT_WORKTREE_DIR=str(setup.worktrees),
        **{f"SCRUM4ME_REPO_ROOT_{world.product_id}": str(setup.root)},
    )
    # The client shares the daemon's instance id (the README's header setup); with an
    # instance of its own, wait_for_job cannot make worktrees (see test_worktree_failures).
    async with (
        running_daemon(settings, db) as daemon,
        mcp_client(daemon.port, world.token, "hostile-host") as client,
    ):
        mine = await enqueue(db, world, mine_story.task_ids[0])
        claimed = await client.call_tool("wait_for_job", {"wait_seconds": 10})
        assert not claimed.is_error, text_of(claimed)
        assert json.loads(text_of(claimed))["job_id"] == mine, text_of(claimed)
        # Still QUEUED: a hostile wait_for_job that got through would claim it.
        await enqueue(db, world, spare_story.task_ids[0])
        before = await snapshot(db, setup.worktrees)
        branches_before = branches(setup.root)
        assert await trio.Path(setup.worktrees / mine).is_dir()
        wrong = []
        calls = hostile_calls(world, mine, foreign, other.product_id)
        for tool, arguments, expected in calls:
            result = await client.call_tool(tool, arguments)
            if not (result.is_error and text_of(result).startswith(expected)):
                wrong.append((tool, str(arguments)[:80], result.is_error, text_of(result)[:200]))
        assert wrong == [], wrong
        assert await snapshot(db, setup.worktrees) == before
        assert branches(setup.root) == branches_before
        assert len(calls) > 40


async def test_wrongly_typed_wait_seconds_is_refused_rather_than_coerced(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    settings = settings_for(
        dsn, world.token, tmp_path, REACTOR_HEALTH_PORT="0", REACTOR_WORKTREES="off"
    )
    async with (
        running_daemon(settings, db) as daemon,
        mcp_client(daemon.port, world.token) as client,
    ):
        job_id = await enqueue(db, world, story.task_ids[0])
        before = await snapshot(db)
        outcomes = []
        for value in (True, "1"):
            result = await client.call_tool("wait_for_job", {"wait_seconds": value})
            outcomes.append((value, result.is_error, text_of(result)[:120]))
        assert all(
            is_error and text.startswith("VALIDATION_ERROR: wait_seconds")
            for _value, is_error, text in outcomes
        ), outcomes
        assert await snapshot(db) == before, f"job {job_id} was claimed by a wrongly typed call"
