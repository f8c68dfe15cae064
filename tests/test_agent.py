"""`reactor run --agent-command`: the daemon launches an agent per claimed job.

Real PostgreSQL, real git, real processes started by /bin/sh; outcomes are read back from the
database, the log directory, the worktree directory and the bare origin.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio

from reactor import metrics
from reactor.app import Daemon, serve_daemon
from reactor.config import Settings
from reactor.db import Database
from tests.agent_world import (
    COMMIT,
    agent_settings,
    job_row,
    make_agent_world,
    process_gone,
    read_pid,
    running_daemon,
    sql,
    status_of,
    task_status,
)
from tests.factory import add_story, enqueue
from tests.gitrepo import branches, commits_between
from tests.waiting import eventually

# An agent that stays busy: a background sleep in the agent's process group, so a test can
# see that stopping the agent stops its children too, not just the shell.
LONG = 'sleep 30 & echo $! > "{pid}"; wait'


async def wait_status(db: Database, job_id: str, status: str, within: float = 15) -> None:
    async def reached() -> bool:
        return await status_of(db, job_id) == status

    await eventually(reached, within=within)


async def wait_pid(path: Path, within: float = 15) -> int:
    await eventually(lambda: read_pid(path) is not None, within=within)
    pid = read_pid(path)
    assert pid is not None
    return pid


async def wait_idle(daemon: Daemon, within: float = 15) -> None:
    """Until the agent slots hold no job: the run, its result and its bookkeeping are over."""
    await eventually(lambda: daemon.stats.running == 0, within=within)


def claims() -> float:
    return metrics.REGISTRY.get_sample_value("reactor_claims_total", {"consumer": "agent"}) or 0.0


async def test_an_agent_that_commits_and_exits_0_gets_its_job_done_and_pushed(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    settings = agent_settings(dsn, aw, f"echo out-line; echo err-line >&2; {COMMIT}")
    async with running_daemon(settings, db):
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await wait_status(db, job_id, "DONE")
    row = await job_row(db, job_id)
    branch = f"feat/story-{story.id[-8:]}"
    assert (row["branch"], row["error"]) == (branch, None)
    assert row["pushed_at"] is not None
    assert branch in branches(aw.setup.origin)
    assert commits_between(aw.setup.origin, "main", branch) == 1
    assert await task_status(db, story.task_ids[0]) == "DONE"
    # It went through RUNNING: started_at is set by that transition, not by the finish.
    assert row["claimed_at"] <= row["started_at"] <= row["finished_at"]
    text = aw.log_of(job_id).read_text()
    assert "out-line" in text
    assert "err-line" in text


async def test_the_agent_runs_in_its_worktree_with_the_job_in_its_environment(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    probe = tmp_path / "probe"
    probe.mkdir()
    # Written outside the worktree: deferred cleanup removes the worktree after the job ends.
    command = (
        f'env > "{probe}/env.txt"; pwd -P > "{probe}/cwd.txt"; '
        f'cat "$SCRUM4ME_JOB_CONTEXT" > "{probe}/context.json"'
    )
    async with running_daemon(agent_settings(dsn, aw, command), db) as daemon:
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await wait_status(db, job_id, "DONE")
        instance = daemon.reactor.worker.instance_id
    env = dict(
        line.split("=", 1) for line in (probe / "env.txt").read_text().splitlines() if "=" in line
    )
    worktree = aw.worktree(job_id)
    assert env["SCRUM4ME_JOB_ID"] == job_id
    assert env["SCRUM4ME_INSTANCE_ID"] == instance
    assert env["SCRUM4ME_WORKTREE"] == str(worktree)
    assert (probe / "cwd.txt").read_text().strip() == str(worktree.resolve())
    context = json.loads((probe / "context.json").read_text())
    assert env["SCRUM4ME_JOB_CONTEXT"].endswith(".json")
    assert context["job_id"] == job_id
    assert context["worktree_path"] == str(worktree)
    assert context["branch_name"] == f"feat/story-{story.id[-8:]}"
    assert context["task"]["id"] == story.task_ids[0]
    # Exit 0 without a commit: done, with nothing to push.
    row = await job_row(db, job_id)
    assert (row["s"], row["pushed_at"]) == ("DONE", None)


async def test_a_non_zero_exit_fails_the_job_with_the_end_of_stderr(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    command = "echo early >&2; echo boom >&2; exit 1"
    async with running_daemon(agent_settings(dsn, aw, command), db) as daemon:
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await wait_status(db, job_id, "FAILED")
        # The story has no active job left and nothing failed to push: deferred cleanup
        # removes the worktree (REACTOR_CLEANUP_GRACE_SECONDS=0).
        await eventually(lambda: not aw.worktree(job_id).exists(), within=10)
        assert daemon.stats.last_batch_exit == 1
    row = await job_row(db, job_id)
    assert "exited with code 1" in row["error"]
    assert row["error"].rstrip().endswith("boom")
    assert "early" in row["error"]
    assert row["pushed_at"] is None
    assert await task_status(db, story.task_ids[0]) == "FAILED"
    assert "boom" in aw.log_of(job_id).read_text()


async def test_an_agent_killed_by_a_signal_fails_its_job(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    async with running_daemon(agent_settings(dsn, aw, "kill -9 $$"), db):
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await wait_status(db, job_id, "FAILED")
    row = await job_row(db, job_id)
    assert "exited with code -9" in row["error"]
    assert "(no output on stderr)" in row["error"]


async def test_a_result_the_agent_reported_itself_is_not_overwritten_by_its_exit_code(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    flag = tmp_path / "go"
    # Waits (bounded) until the test has stored DONE, the way an agent's own MCP
    # update_job_status would have, then exits with an error anyway.
    command = f'i=0; while [ ! -e "{flag}" ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done; '
    command += "echo late-failure >&2; exit 1"
    async with running_daemon(agent_settings(dsn, aw, command), db) as daemon:
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await wait_status(db, job_id, "RUNNING")
        await db.execute(
            sql(
                "UPDATE claude_jobs SET status = 'DONE', finished_at = now(), "
                "summary = 'reported by the agent' WHERE id = $1"
            ),
            job_id,
        )
        flag.touch()
        await eventually(lambda: daemon.stats.last_batch_exit == 1, within=10)
        await wait_idle(daemon)
    row = await job_row(db, job_id)
    assert (row["s"], row["summary"], row["error"]) == ("DONE", "reported by the agent", None)


async def test_an_agent_past_the_hard_deadline_is_stopped_and_its_job_failed(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    pid_file = tmp_path / "sleep.pid"
    settings = agent_settings(dsn, aw, LONG.format(pid=pid_file), REACTOR_AGENT_TIMEOUT_SECONDS="2")
    async with running_daemon(settings, db):
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        pid = await wait_pid(pid_file)
        started = trio.current_time()
        await wait_status(db, job_id, "FAILED", within=10)
        assert trio.current_time() - started < 6
        assert process_gone(pid)
    row = await job_row(db, job_id)
    assert "REACTOR_AGENT_TIMEOUT_SECONDS" in row["error"]
    assert "stopped" in row["error"]


async def test_shutdown_stops_claiming_and_requeues_a_long_agent_s_job_after_the_grace(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story, later_story = await add_story(db, aw.world), await add_story(db, aw.world)
    pid_file = tmp_path / "sleep.pid"
    settings = agent_settings(
        dsn,
        aw,
        LONG.format(pid=pid_file),
        REACTOR_AGENT_GRACE_SECONDS="1",
        REACTOR_CONCURRENCY="2",
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            daemon: Daemon = await nursery.start(serve_daemon, settings, db)
            job_id = await enqueue(db, aw.world, story.task_ids[0])
            pid = await wait_pid(pid_file)
            await wait_status(db, job_id, "RUNNING")
            daemon.stop.set()
            stopping = trio.current_time()
            # A free slot remains, but a stopping daemon takes no new work.
            later = await enqueue(db, aw.world, later_story.task_ids[0])
    # Grace (1 s) plus SIGTERM; far less than the SIGKILL escalation (10 s) would take.
    assert trio.current_time() - stopping < 8
    assert process_gone(pid)
    row = await job_row(db, job_id)
    assert (row["s"], row["retry_count"], row["error"]) == ("QUEUED", 0, None)
    assert (row["claimed_by_token_id"], row["worker_instance_id"]) == (None, None)
    untouched = await job_row(db, later)
    assert (untouched["s"], untouched["claimed_at"]) == ("QUEUED", None)


async def start_daemon(
    nursery: trio.Nursery, settings: Settings, db: Database
) -> tuple[Daemon, trio.Event]:
    """serve_daemon in ``nursery``, and an event set when it returns on its own."""
    returned = trio.Event()

    async def serve(*, task_status: trio.TaskStatus[Daemon]) -> None:
        await serve_daemon(settings, db, task_status=task_status)
        returned.set()

    daemon: Daemon = await nursery.start(serve)
    return daemon, returned


async def test_shutdown_lets_a_running_agent_finish_its_job_within_the_grace(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    pid_file = tmp_path / "agent.pid"
    command = f'echo $$ > "{pid_file}"; sleep 1; {COMMIT}'
    settings = agent_settings(dsn, aw, command, REACTOR_AGENT_GRACE_SECONDS="20")
    async with trio.open_nursery() as nursery:
        daemon, _returned = await start_daemon(nursery, settings, db)
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await wait_pid(pid_file)
        daemon.stop.set()
        # Stopped while its agent ran: the job is finished, not stopped and requeued.
        await wait_status(db, job_id, "DONE")
        await wait_idle(daemon)
        # Cut off whatever is left of the shutdown; the next test is about its length.
        nursery.cancel_scope.cancel()
    row = await job_row(db, job_id)
    assert (row["retry_count"], row["error"]) == (0, None)
    assert row["pushed_at"] is not None


async def test_shutdown_returns_promptly_once_the_agents_finished_within_the_grace(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    pid_file = tmp_path / "agent.pid"
    command = f'echo $$ > "{pid_file}"; sleep 0.5; {COMMIT}'
    settings = agent_settings(dsn, aw, command, REACTOR_AGENT_GRACE_SECONDS="20")
    async with trio.open_nursery() as nursery:
        daemon, returned = await start_daemon(nursery, settings, db)
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await wait_pid(pid_file)
        daemon.stop.set()
        await wait_status(db, job_id, "DONE")
        await wait_idle(daemon)
        # Nothing is left to wait for; 3 s is plenty to close the listener and HTTP.
        with trio.move_on_after(3):
            await returned.wait()
        nursery.cancel_scope.cancel()
    assert returned.is_set(), "the daemon was still shutting down 3 s after its last agent"


async def test_a_job_cancelled_in_the_ui_stops_its_agent(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    pid_file = tmp_path / "sleep.pid"
    async with running_daemon(agent_settings(dsn, aw, LONG.format(pid=pid_file)), db) as daemon:
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        pid = await wait_pid(pid_file)
        await wait_status(db, job_id, "RUNNING")
        await db.execute(
            sql("UPDATE claude_jobs SET status = 'CANCELLED', finished_at = now() WHERE id = $1"),
            job_id,
        )
        await eventually(lambda: process_gone(pid), within=5)
        await wait_idle(daemon)
    row = await job_row(db, job_id)
    assert (row["s"], row["error"]) == ("CANCELLED", None)


async def test_the_lease_is_renewed_while_the_agent_runs(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    settings = agent_settings(dsn, aw, f"sleep 4; {COMMIT}", REACTOR_LEASE_SECONDS="3")
    async with running_daemon(settings, db):
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await wait_status(db, job_id, "RUNNING")

        async def renewed() -> bool:
            row = await db.fetchrow(
                sql(
                    "SELECT status::text AS s, lease_until > claimed_at + interval '3.5 seconds' "
                    "AS renewed FROM claude_jobs WHERE id = $1"
                ),
                job_id,
            )
            assert row is not None
            assert row["s"] == "RUNNING"  # still running: neither finished nor rescued
            return bool(row["renewed"])

        # The first lease (3 s from the claim) has been pushed out while the agent runs.
        await eventually(renewed, within=4)
        await wait_status(db, job_id, "DONE")
    row = await job_row(db, job_id)
    # Without renewal the sweep would have rescued the job at its 3 s expiry: a retry.
    assert (row["retry_count"], row["pushed_at"] is not None) == (0, True)


def intervals(path: Path) -> dict[str, tuple[float, float]]:
    """Per job, when its agent started and ended (lines the agents appended)."""
    seen: dict[str, dict[str, float]] = {}
    for line in path.read_text().splitlines():
        what, job_id, at = line.split()
        seen.setdefault(job_id, {})[what] = float(at)
    return {job_id: (marks["start"], marks["end"]) for job_id, marks in seen.items()}


def most_overlapping(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _at, step in edges:
        running += step
        peak = max(peak, running)
    return peak


TIMED = (
    'echo "start $SCRUM4ME_JOB_ID $(date +%s.%N)" >> "{log}"; sleep 1; '
    'echo "end $SCRUM4ME_JOB_ID $(date +%s.%N)" >> "{log}"; ' + COMMIT
)


async def test_at_most_reactor_concurrency_agents_run_at_once(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    stories = [await add_story(db, aw.world) for _ in range(3)]
    timeline = tmp_path / "timeline"
    settings = agent_settings(dsn, aw, TIMED.format(log=timeline), REACTOR_CONCURRENCY="2")
    async with running_daemon(settings, db):
        jobs = [await enqueue(db, aw.world, story.task_ids[0]) for story in stories]
        for job_id in jobs:
            await wait_status(db, job_id, "DONE", within=20)
    spans = intervals(timeline)
    assert set(spans) == set(jobs)
    # Two run side by side (the slots are used), never three.
    assert most_overlapping(list(spans.values())) == 2


async def test_two_tasks_of_one_story_never_run_at_once_even_with_free_slots(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world, tasks=2)
    timeline = tmp_path / "timeline"
    settings = agent_settings(dsn, aw, TIMED.format(log=timeline), REACTOR_CONCURRENCY="2")
    async with running_daemon(settings, db):
        jobs = [await enqueue(db, aw.world, task_id) for task_id in story.task_ids]
        for job_id in jobs:
            await wait_status(db, job_id, "DONE", within=20)
    spans = intervals(timeline)
    first, second = spans[jobs[0]], spans[jobs[1]]
    assert first[1] <= second[0]  # the second task starts after the first ended
    branch = f"feat/story-{story.id[-8:]}"
    assert commits_between(aw.setup.origin, "main", branch) == 2


async def test_a_job_without_a_repo_root_is_given_back_and_not_claimed_in_a_loop(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    ran = tmp_path / "ran"
    settings = agent_settings(dsn, aw, f'touch "{ran}"', repo_root=False)
    before = claims()
    async with running_daemon(settings, db) as daemon:
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await eventually(lambda: claims() > before, within=10)
        await wait_idle(daemon)
        reactor = daemon.reactor
        attempts = reactor.pump.claim_attempts
        # Wake-ups that would re-claim it: sweeps, each followed by a pump pass.
        for _ in range(5):
            swept = reactor.state.last_sweep_at
            reactor.request_sweep("test")
            await eventually(lambda: reactor.state.last_sweep_at != swept, within=5)  # noqa: B023
            await reactor.pump.wait_quiet()
        assert claims() - before == 1
        # One claim statement per pass, each finding nothing: no claim-and-give-back loop.
        assert reactor.pump.claim_attempts - attempts <= 5
    row = await job_row(db, job_id)
    assert (row["s"], row["retry_count"], row["claimed_by_token_id"]) == ("QUEUED", 0, None)
    assert not ran.exists()
    assert not aw.worktree(job_id).exists()


async def test_an_agent_that_fails_at_once_still_gets_its_stderr_into_the_error_and_log(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    # Several jobs, because the loss is a race (it hit about 4 in 5 runs when measured).
    stories = [await add_story(db, aw.world) for _ in range(6)]
    command = 'echo "last-$SCRUM4ME_JOB_ID" >&2; exit 1'
    settings = agent_settings(dsn, aw, command, REACTOR_CONCURRENCY="3")
    async with running_daemon(settings, db):
        jobs = [await enqueue(db, aw.world, story.task_ids[0]) for story in stories]
        for job_id in jobs:
            await wait_status(db, job_id, "FAILED", within=20)
    missing = []
    for job_id in jobs:
        error = (await job_row(db, job_id))["error"]
        assert "exited with code 1" in error
        if f"last-{job_id}" not in error or f"last-{job_id}" not in aw.log_of(job_id).read_text():
            missing.append(job_id)
    assert missing == []


async def test_a_worktree_still_in_use_at_cleanup_is_removed_once_its_agent_exits(
    db: Database, dsn: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reactor.cleanup")
    aw = await make_agent_world(db, tmp_path)
    story = await add_story(db, aw.world)
    flag = tmp_path / "go"
    command = f'i=0; while [ ! -e "{flag}" ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done'
    async with running_daemon(agent_settings(dsn, aw, command), db) as daemon:
        job_id = await enqueue(db, aw.world, story.task_ids[0])
        await wait_status(db, job_id, "RUNNING")
        # The agent reports its result and keeps running a little (as an MCP agent whose
        # hooks still run after update_job_status).
        await db.execute(
            sql("UPDATE claude_jobs SET status = 'DONE', finished_at = now() WHERE id = $1"),
            job_id,
        )

        def skipped_in_use() -> bool:
            return any(
                record.getMessage() == "cleanup.in_use" and getattr(record, "job_id", "") == job_id
                for record in caplog.records
            )

        await eventually(skipped_in_use, within=5)
        assert aw.worktree(job_id).is_dir()
        flag.touch()
        await wait_idle(daemon)
        # The story has no active job and the agent is gone: nothing keeps the worktree.
        await eventually(lambda: not aw.worktree(job_id).exists(), within=3)


async def test_a_job_kind_without_a_worktree_runs_its_agent_in_the_log_directory(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    aw = await make_agent_world(db, tmp_path)
    probe = tmp_path / "probe"
    probe.mkdir()
    command = f'pwd -P > "{probe}/cwd.txt"; echo "wt=${{SCRUM4ME_WORKTREE-unset}}" > "{probe}/wt"'
    settings = agent_settings(dsn, aw, command, REACTOR_KINDS="IDEA_GRILL")
    async with running_daemon(settings, db):
        job_id = await enqueue(db, aw.world, None, kind="IDEA_GRILL")
        await wait_status(db, job_id, "DONE")
    assert (probe / "cwd.txt").read_text().strip() == str(aw.logs.resolve())
    assert (probe / "wt").read_text().strip() == "wt=unset"
    assert not aw.setup.worktrees.exists() or not any(aw.setup.worktrees.iterdir())
    assert (await job_row(db, job_id))["pushed_at"] is None
