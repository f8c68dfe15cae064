"""The surfaces through real clients: MCP over streamable HTTP and stdio, /health, /metrics."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families

from handlers.auth import Worker
from handlers.claim import ClaimedJob, claim_job
from handlers.workspace import Workspace
from reactor.app import Daemon, serve_daemon
from reactor.db import Database
from reactor.mcp_tools import ToolHost
from reactor.pump import Waiter
from reactor.runtime import Reactor
from reactor.sqlfiles import Query
from reactor.web import HttpPresence
from tests.factory import World, add_story, enqueue, make_world
from tests.running import running_reactor, settings_for, worker_for
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(90)


def sql(text: str) -> Query:
    return Query("test", text)


@asynccontextmanager
async def running_daemon(
    db: Database, dsn: str, world: World, tmp_path: Path, **env: str
) -> AsyncIterator[Daemon]:
    settings = settings_for(
        dsn, world.token, tmp_path, REACTOR_HEALTH_PORT="0", REACTOR_WORKTREES="off", **env
    )
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve_daemon, settings, db)
        yield daemon
        daemon.stop.set()


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def fetch(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    return await trio.to_thread.run_sync(get, port, path, headers)


@asynccontextmanager
async def http_client(port: int, token: str, instance: str | None = None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"}
    if instance:
        headers["X-Scrum4Me-Instance-Id"] = instance
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=700)) as http,
        Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as client,
    ):
        yield client


def text_of(result: Any) -> str:
    """The text of a tool result's first content block."""
    return str(result.content[0].text)


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert isinstance(data, dict)
    assert json.loads(text_of(result)) == data  # the text is the same JSON
    return data


async def test_health_reports_the_agent_runner_shape_without_secrets(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    async with running_daemon(db, dsn, world, tmp_path) as daemon:
        status, text = await fetch(daemon.port, "/health")
    body = json.loads(text)
    assert status == 200
    assert body["status"] == "idle"
    assert {"lastBatchAt", "lastBatchExit", "consecutiveFailures"} <= body.keys()
    assert body["tokenStatus"] == {"scrum4me": "ok", "db": "ok"}
    assert body["listener"]["state"] == "healthy"
    assert body["queueDepth"] == 0
    assert body["jobsInFlight"] == 0
    assert [w["instance_id"] for w in body["workers"]] == [body["instanceId"]]
    assert world.token not in text
    assert dsn.split("@")[0] not in text


async def test_metrics_parse_with_the_prometheus_parser(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    async with running_daemon(db, dsn, world, tmp_path) as daemon:
        async with http_client(daemon.port, world.token) as client:
            await enqueue(db, world, story.task_ids[0])
            structured(await client.call_tool("wait_for_job", {"wait_seconds": 5}))
        status, text = await fetch(daemon.port, "/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "reactor_pickup_latency_seconds",
        "reactor_claims",
        "reactor_transitions",
        "reactor_rescues",
        "reactor_listener_reconnects",
        "reactor_queue_depth",
        "reactor_notification_queue_usage",
        "reactor_jobs_in_flight",
    ):
        assert name in families, name
    pickups = [
        s for s in families["reactor_pickup_latency_seconds"].samples if s.name.endswith("_count")
    ]
    assert pickups[0].value >= 1
    assert world.token not in text


async def test_mcp_over_http_refuses_missing_and_wrong_tokens(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    async with running_daemon(db, dsn, world, tmp_path) as daemon:
        missing, _ = await fetch(daemon.port, "/mcp")
        wrong, body = await fetch(daemon.port, "/mcp", {"Authorization": "Bearer nope"})
        hostile, _ = await fetch(
            daemon.port,
            "/mcp",
            {"Authorization": f"Bearer {world.token}", "X-Scrum4Me-Instance-Id": "../x"},
        )
    assert (missing, wrong, hostile) == (401, 401, 401)
    assert "invalid or revoked" in json.loads(body)["message"]


async def test_mcp_over_http_serves_every_tool(db: Database, dsn: str, tmp_path: Path) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    async with (
        running_daemon(db, dsn, world, tmp_path) as daemon,
        http_client(daemon.port, world.token) as client,
    ):
        names = sorted(tool.name for tool in (await client.list_tools()).tools)
        assert names == [
            "check_queue_empty",
            "cleanup_my_worktrees",
            "job_heartbeat",
            "update_job_status",
            "wait_for_job",
        ]
        job_id = await enqueue(db, world, story.task_ids[0])
        job = structured(await client.call_tool("wait_for_job", {"wait_seconds": 5}))
        assert job["job_id"] == job_id
        assert job["task"]["id"] == story.task_ids[0]
        assert structured(await client.call_tool("job_heartbeat", {"job_id": job_id}))["ok"] is True
        queue = structured(await client.call_tool("check_queue_empty", {}))
        assert queue == {"empty": False, "remaining": 1, "by_product": {world.product_id: 1}}
        done = structured(
            await client.call_tool("update_job_status", {"job_id": job_id, "status": "done"})
        )
        assert (done["status"], done["next_action"]) == ("done", "queue_empty")
        assert structured(await client.call_tool("cleanup_my_worktrees", {}))["removed"] == []
        presence = sql("SELECT count(*) FROM claude_workers WHERE instance_id = $1")
        assert await db.fetchval(presence, f"http-{world.token_id}") == 1  # a visible worker
    # Shutting the daemon down removes its HTTP callers' presence rows too.
    assert await db.fetchval(presence, f"http-{world.token_id}") == 0


async def test_bad_inputs_get_the_right_prefix_and_change_nothing(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    other = await make_world(db)
    story = await add_story(db, world)
    foreign = await enqueue(db, other, (await add_story(db, other)).task_ids[0])
    everything = sql("SELECT * FROM claude_jobs ORDER BY id")
    async with (
        running_daemon(db, dsn, world, tmp_path) as daemon,
        http_client(daemon.port, world.token) as client,
    ):
        job_id = await enqueue(db, world, story.task_ids[0])
        structured(await client.call_tool("wait_for_job", {"wait_seconds": 5}))
        before = await db.fetch(everything)
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("wait_for_job", {"wait_seconds": 0}, "VALIDATION_ERROR: wait_seconds"),
            ("wait_for_job", {"wait_seconds": 601}, "VALIDATION_ERROR: wait_seconds"),
            ("wait_for_job", {"wait_seconds": "soon"}, "VALIDATION_ERROR: wait_seconds"),
            ("wait_for_job", {"product_id": ""}, "VALIDATION_ERROR: product_id"),
            ("update_job_status", {"status": "done"}, "VALIDATION_ERROR: job_id"),
            (
                "update_job_status",
                {"job_id": job_id, "status": "finished"},
                "VALIDATION_ERROR: status",
            ),
            (
                "update_job_status",
                {"job_id": job_id, "status": "done", "summary": "s" * 4001},
                "VALIDATION_ERROR: summary",
            ),
            (
                "update_job_status",
                {"job_id": job_id, "status": "failed", "error": "e" * 2001},
                "VALIDATION_ERROR: error",
            ),
            (
                "update_job_status",
                {"job_id": job_id, "status": "done", "input_tokens": -1},
                "VALIDATION_ERROR: input_tokens",
            ),
            (
                "update_job_status",
                {"job_id": "../../etc/passwd", "status": "done"},
                "VALIDATION_ERROR: job_id",
            ),
            (
                "update_job_status",
                {"job_id": job_id, "status": "done", "branch": "-delete"},
                "VALIDATION_ERROR: branch",
            ),
            (
                "update_job_status",
                {"job_id": job_id, "status": "skipped", "error": "short"},
                "VALIDATION_ERROR: error",
            ),
            (
                "update_job_status",
                {"job_id": "cunknownjob0000000000000", "status": "done"},
                "Job cunknownjob0000000000000 not found",
            ),
            (
                "update_job_status",
                {"job_id": foreign, "status": "done"},
                "PERMISSION_DENIED: This job was not",
            ),
            ("job_heartbeat", {"job_id": foreign}, "PERMISSION_DENIED: This job was not"),
            ("check_queue_empty", {"product_id": other.product_id}, "not found or not accessible"),
        ]
        for tool, arguments, expected in cases:
            result = await client.call_tool(tool, arguments)
            assert result.is_error, (tool, arguments)
            assert expected in text_of(result), (tool, arguments, text_of(result))
        assert await db.fetch(everything) == before
        await db.execute(sql("UPDATE claude_jobs SET status = 'CANCELLED' WHERE id = $1"), job_id)
        cancelled = await client.call_tool(
            "update_job_status", {"job_id": job_id, "status": "done"}
        )
        assert text_of(cancelled).startswith("JOB_CANCELLED: ")
    async with (
        running_daemon(db, dsn, world, tmp_path) as daemon,
        http_client(daemon.port, other.token) as client,
    ):
        denied = await client.call_tool("update_job_status", {"job_id": job_id, "status": "done"})
        assert text_of(denied).startswith("PERMISSION_DENIED: ")


async def test_wait_for_job_times_out_on_time(db: Database, dsn: str, tmp_path: Path) -> None:
    world = await make_world(db)
    async with (
        running_daemon(db, dsn, world, tmp_path) as daemon,
        http_client(daemon.port, world.token) as client,
    ):
        start = trio.current_time()
        result = structured(await client.call_tool("wait_for_job", {"wait_seconds": 2}))
        elapsed = trio.current_time() - start
    assert result == {"status": "timeout", "message": "No job available within wait window"}
    assert 2.0 <= elapsed < 2.5


async def test_a_waiting_call_wakes_on_an_enqueue_from_another_connection(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    async with (
        running_daemon(db, dsn, world, tmp_path) as daemon,
        http_client(daemon.port, world.token) as client,
    ):
        got: list[dict[str, Any]] = []

        async def wait() -> None:
            got.append(structured(await client.call_tool("wait_for_job", {"wait_seconds": 30})))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await eventually(
                lambda: len(daemon.reactor.pump_for(_http_worker(daemon, world))._consumers) > 0
            )
            enqueued_at = trio.current_time()
            job_id = await enqueue(db, world, story.task_ids[0])
        waited = trio.current_time() - enqueued_at
    assert got[0]["job_id"] == job_id
    assert waited < 2  # woken by the notification, not by a 30 s timeout or the 60 s sweep


def _http_worker(daemon: Daemon, world: World) -> Any:
    from handlers.auth import Worker

    return Worker(world.user_id, world.token_id, f"http-{world.token_id}", "", False)


async def test_concurrent_waiters_each_get_a_different_job(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    stories = [await add_story(db, world) for _ in range(3)]
    results: list[dict[str, Any]] = []
    async with running_daemon(db, dsn, world, tmp_path) as daemon:

        async def wait(instance: str) -> None:
            async with http_client(daemon.port, world.token, instance) as client:
                results.append(
                    structured(await client.call_tool("wait_for_job", {"wait_seconds": 20}))
                )

        async with trio.open_nursery() as nursery:
            for index in range(3):
                nursery.start_soon(wait, f"agent-{index}")
            await eventually(
                lambda: daemon.reactor.state is not None and len(daemon.reactor._pumps) >= 4
            )
            jobs = [await enqueue(db, world, story.task_ids[0]) for story in stories]
    assert sorted(r["job_id"] for r in results) == sorted(jobs)


async def test_a_waiter_whose_client_went_away_claims_nothing(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    async with running_daemon(db, dsn, world, tmp_path) as daemon:
        pump = daemon.reactor.pump_for(_http_worker(daemon, world))
        with trio.move_on_after(10) as scope:
            async with (
                http_client(daemon.port, world.token) as client,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(client.call_tool, "wait_for_job", {"wait_seconds": 60})
                await eventually(lambda: len(pump._consumers) == 1)
                nursery.cancel_scope.cancel()  # the client hangs up mid-wait
        assert not scope.cancelled_caught
        await eventually(lambda: len(pump._consumers) == 0)
        job_id = await enqueue(db, world, story.task_ids[0])
        await daemon.reactor.dispatcher.wait_processed(daemon.reactor.dispatcher.processed)
        await pump.wait_quiet()
    assert (
        await db.fetchval(sql("SELECT status::text FROM claude_jobs WHERE id = $1"), job_id)
        == "QUEUED"
    )


async def test_a_waiter_cancelled_in_the_tick_it_was_filled_gives_the_job_back(
    db: Database, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hardest moment to hang up: the pump hands the waiter its job and the caller's
    # cancellation is already on its way. The claim must go back to the queue at once.
    world = await make_world(db)
    story = await add_story(db, world)
    settings = settings_for(dsn, world.token, tmp_path, REACTOR_WORKTREES="off")
    caller = trio.CancelScope()
    plain_offer = Waiter.offer

    def offer_then_hang_up(self: Waiter, job: ClaimedJob) -> bool:
        caller.cancel()
        return plain_offer(self, job)

    monkeypatch.setattr(Waiter, "offer", offer_then_hang_up)
    async with running_reactor(db, settings, world, presence=False) as reactor:
        host = ToolHost(reactor, Workspace.from_settings(settings), lambda _ctx: _same(reactor))
        job_id = ""
        with caller:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(host.wait_for_job, reactor.worker, None, 60)
                await eventually(lambda: len(reactor.pump._consumers) == 1)
                job_id = await enqueue(db, world, story.task_ids[0])
                await trio.sleep_forever()
        assert caller.cancelled_caught
    job = await db.fetchrow(
        sql("SELECT status::text AS status, worker_instance_id FROM claude_jobs WHERE id = $1"),
        job_id,
    )
    assert job is not None
    assert (job["status"], job["worker_instance_id"]) == ("QUEUED", None)


async def test_an_http_caller_that_goes_idle_loses_its_pump_and_presence(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    # Every distinct X-Scrum4Me-Instance-Id gets a claim pump; one that stopped calling
    # must not keep a task (and a claude_workers row) for the life of the daemon.
    world = await make_world(db)
    settings = settings_for(dsn, world.token, tmp_path, REACTOR_WORKTREES="off")
    rows = sql("SELECT count(*) FROM claude_workers WHERE instance_id = 'http-caller'")
    async with running_reactor(db, settings, world, presence=False) as reactor:
        caller = await worker_for(db, world, "http-caller")
        people = HttpPresence(reactor, idle_after=0)
        pump = reactor.pump_for(caller)
        people.begin(caller)
        await people._tick()
        assert await db.fetchval(rows) == 1
        assert reactor.pump_for(caller) is pump  # busy: kept
        people.end(caller)
        await people._tick()
        assert await db.fetchval(rows) == 0
        assert (caller.token_id, caller.instance_id) not in reactor._pumps
        with trio.fail_after(5):
            await pump.run()  # closed: returns at once instead of waiting for wake-ups
        assert reactor.pump_for(caller) is not pump  # a new call starts afresh


async def _same(reactor: Reactor) -> Worker:
    return reactor.worker


async def test_health_turns_unhealthy_when_the_database_goes_away_and_recovers(
    db: Database, dsn: str, tmp_path: Path, pg_server: Any
) -> None:
    world = await make_world(db)
    name = urlsplit(dsn).path.lstrip("/")  # also for the embedded server's socket-path DSN
    async with running_daemon(
        db, dsn, world, tmp_path, REACTOR_LISTENER_DOWN_UNHEALTHY_SECONDS="1"
    ) as daemon:
        assert (await fetch(daemon.port, "/health"))[0] == 200
        await trio.to_thread.run_sync(
            pg_server.execute,
            f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false; '
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'",
        )
        try:

            async def unhealthy() -> bool:
                status, text = await fetch(daemon.port, "/health")
                return status == 503 and json.loads(text)["status"] == "unhealthy"

            await eventually(unhealthy, within=20)
        finally:
            await trio.to_thread.run_sync(
                pg_server.execute, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'
            )

        async def healthy() -> bool:
            return (await fetch(daemon.port, "/health"))[0] == 200

        await eventually(healthy, within=20)
        assert daemon.reactor.listener.status.reconnects >= 1


async def test_a_revoked_token_makes_health_say_token_expired(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    env = {"REACTOR_PING_SECONDS": "0.5", "REACTOR_PING_TIMEOUT_SECONDS": "0.4"}
    async with running_daemon(db, dsn, world, tmp_path, **env) as daemon:
        await db.execute(
            sql("UPDATE api_tokens SET revoked_at = now() WHERE id = $1"), world.token_id
        )
        await eventually(lambda: not daemon.reactor.state.token_valid)
        status, text = await fetch(daemon.port, "/health")
    assert status == 503
    assert json.loads(text)["status"] == "token-expired"


def _stdio(dsn: str, token: str, home: Path, **extra: str) -> StdioServerParameters:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "DATABASE_URL": dsn,
        "SCRUM4ME_TOKEN": token,
        "SCRUM4ME_INSTANCE_ID": "stdio-agent",
        "REACTOR_WORKTREES": "off",
        **extra,
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "reactor", "mcp"], env=env)


async def test_mcp_over_stdio_claims_reports_and_unregisters_on_eof(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    presence = sql("SELECT count(*) FROM claude_workers WHERE instance_id = 'stdio-agent'")
    async with Client(_stdio(dsn, world.token, tmp_path)) as client:
        assert await db.fetchval(presence) == 1
        job_id = await enqueue(db, world, story.task_ids[0])
        job = structured(await client.call_tool("wait_for_job", {"wait_seconds": 10}))
        assert job["job_id"] == job_id
        refusal = await client.call_tool(
            "update_job_status", {"job_id": job_id, "status": "skipped"}
        )
        assert text_of(refusal).startswith("VALIDATION_ERROR: ")
        done = structured(
            await client.call_tool("update_job_status", {"job_id": job_id, "status": "done"})
        )
        assert done["status"] == "done"
        timeout = structured(await client.call_tool("wait_for_job", {"wait_seconds": 1}))
        assert timeout["status"] == "timeout"

    async def unregistered() -> bool:
        return bool(await db.fetchval(presence) == 0)

    await eventually(unregistered, within=10)  # stdin EOF ended the server and its presence


async def test_an_agent_launched_by_the_daemon_gets_its_own_job_and_nothing_more(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    # The standard prompt loops on wait_for_job. Under `reactor run --agent-command` the
    # agent's own `reactor mcp` hands it the job it was launched for, then says there is no
    # more: claiming under the daemon's instance id would bypass its concurrency and leases.
    world = await make_world(db)
    mine, other = await add_story(db, world), await add_story(db, world)
    job_id = await enqueue(db, world, mine.task_ids[0])
    daemon = await worker_for(db, world, "stdio-agent")
    claimed = await claim_job(
        db, daemon, kinds=["TASK_IMPLEMENTATION"], product_id=None, lease_seconds=300,
        consumer="test",
    )  # fmt: skip
    assert claimed is not None
    assert claimed.id == job_id
    waiting = await enqueue(db, world, other.task_ids[0])
    async with Client(_stdio(dsn, world.token, tmp_path, SCRUM4ME_JOB_ID=job_id)) as client:
        job = structured(await client.call_tool("wait_for_job", {"wait_seconds": 30}))
        assert (job["job_id"], job["status"]) == (job_id, "claimed")
        with trio.fail_after(10):  # answered at once, not after wait_seconds
            again = structured(await client.call_tool("wait_for_job", {"wait_seconds": 60}))
        assert again["status"] == "timeout"
        assert job_id in again["message"]
        done = structured(
            await client.call_tool("update_job_status", {"job_id": job_id, "status": "done"})
        )
        assert done["status"] == "done"
    assert (
        await db.fetchval(sql("SELECT status::text FROM claude_jobs WHERE id = $1"), waiting)
        == "QUEUED"
    )
    presence = sql("SELECT count(*) FROM claude_workers WHERE instance_id = 'stdio-agent'")
    assert await db.fetchval(presence) == 0  # the daemon, not the agent, is the worker


async def test_a_demo_token_cannot_start_the_stdio_server(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db, demo=True)
    process = await trio.run_process(
        [sys.executable, "-m", "reactor", "mcp"],
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "DATABASE_URL": dsn,
            "SCRUM4ME_TOKEN": world.token,
        },
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert process.returncode == 4
    assert b"demo account" in process.stderr
    assert process.stdout == b""  # stdout is reserved for MCP messages


async def test_health_lists_a_worker_that_connects_with_when_it_was_heard(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    async with running_daemon(db, dsn, world, tmp_path) as daemon:
        await db.execute(
            sql(
                "INSERT INTO claude_workers (id, user_id, token_id, instance_id) "
                "VALUES ('cw-other', $1, $2, 'nas-runner-2')"
            ),
            world.user_id,
            world.token_id,
        )
        await eventually(lambda: "nas-runner-2" in daemon.reactor.state.live_workers)
        status, text = await fetch(daemon.port, "/health")
    workers = {w["instance_id"]: w for w in json.loads(text)["workers"]}
    assert status == 200
    assert workers["nas-runner-2"]["connectedAt"] is not None
    assert json.loads(text)["lastSweepAt"] is not None
