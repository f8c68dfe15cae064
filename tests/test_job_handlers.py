"""Worktrees, transitions, pushes and deferred cleanup, with real git and a real PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handlers.auth import Worker
from handlers.claim import claim_job, rescue_expired, rollback_claim
from handlers.cleanup import catch_up, cleanup_my_worktrees, cleanup_story
from handlers.errors import HandlerError
from handlers.heartbeat import job_heartbeat
from handlers.queue import check_queue_empty
from handlers.repo_root import RepoRootConfig
from handlers.transition import ERROR_MAX, SUMMARY_MAX, StatusReport, update_job_status
from handlers.workspace import GitRunner, Workspace
from handlers.worktree import WorktreeReady, WorktreeUnavailable, attach_worktree
from reactor.db import Database, ListenSession
from reactor.jobflow import CleanupService
from reactor.sqlfiles import Query
from tests.factory import Story, World, add_story, enqueue, make_world
from tests.gitrepo import (
    Setup,
    branches,
    commit,
    commits_between,
    git,
    make_setup,
    push_from_other_clone,
)
from tests.running import running_reactor, settings_for, worker_for
from tests.waiting import eventually

KINDS = ["TASK_IMPLEMENTATION"]


def sql(text: str) -> Query:
    return Query("test", text)


@dataclass
class Env:
    world: World
    setup: Setup
    ws: Workspace
    worker: Worker


async def make_env(
    db: Database, tmp_path: Path, *, default_branch: str = "main", configured: bool = True
) -> Env:
    world = await make_world(db, repo_url="https://git.example.invalid/acme/app.git")
    setup = make_setup(tmp_path / "repo", default_branch)
    ws = Workspace(
        worktree_dir=setup.worktrees,
        repo_roots=RepoRootConfig(
            by_product={world.product_id: setup.root} if configured else {},
            by_repo={},
            config_file=tmp_path / "agent-config.json",
            home=tmp_path / "home",
        ),
        git=GitRunner(4),
        cleanup_grace_seconds=0,
    )
    return Env(world, setup, ws, await worker_for(db, world, "w1"))


async def claim(db: Database, worker: Worker) -> str:
    job = await claim_job(db, worker, kinds=KINDS, product_id=None, lease_seconds=300, consumer="t")
    assert job is not None
    return job.id


async def report(db: Database, env: Env, job_id: str, status: Any, **fields: Any) -> dict[str, Any]:
    return await update_job_status(
        db,
        env.ws,
        env.worker,
        StatusReport(job_id, status, **fields),
        kinds=KINDS,
    )


@dataclass
class Started:
    """A story whose first job is claimed and has its worktree."""

    story: Story
    jobs: list[str]
    ready: WorktreeReady


async def start_first_job(db: Database, env: Env, *, tasks: int = 1) -> Started:
    story = await add_story(db, env.world, tasks=tasks)
    jobs = [await enqueue(db, env.world, task) for task in story.task_ids]
    assert await claim(db, env.worker) == jobs[0]
    ready = await attach_worktree(db, env.ws, env.worker, jobs[0])
    assert ready is not None
    return Started(story, jobs, ready)


async def row(db: Database, job_id: str) -> dict[str, object]:
    found = await db.fetchrow(
        sql("SELECT * , status::text AS s FROM claude_jobs WHERE id = $1"), job_id
    )
    assert found is not None
    return dict(found)


async def test_three_sibling_tasks_land_as_one_branch_with_three_commits(
    db: Database, tmp_path: Path
) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world, tasks=3)
    jobs = [await enqueue(db, env.world, task) for task in story.task_ids]
    branch = f"feat/story-{story.id[-8:]}"
    for index, job_id in enumerate(jobs):
        assert await claim(db, env.worker) == job_id
        ready = await attach_worktree(db, env.ws, env.worker, job_id)
        assert ready is not None
        assert ready.path == env.setup.worktrees / job_id
        assert ready.branch == branch
        assert ready.reused_branch is (index > 0)
        assert git(ready.path, "rev-parse", "--abbrev-ref", "HEAD") == branch
        commit(ready.path, f"task{index}.txt")
        out = await report(db, env, job_id, "done", summary=f"task {index} done")
        assert (out["status"], out["branch"]) == ("done", branch)
        assert out["pushed_at"] is not None
        # The finished worktree stays (deferred cleanup) until the story's last job ends...
        await cleanup_story(db, env.ws, story.id, why="test")
        assert (env.setup.worktrees / job_id).is_dir() is (index < 2)
    assert branches(env.setup.origin) == {"main", branch}
    assert commits_between(env.setup.origin, "main", branch) == 3
    # ...and the pushed branch is kept locally once they are gone.
    assert branch in branches(env.setup.root)
    statuses = await db.fetch(sql("SELECT status::text FROM tasks WHERE story_id = $1"), story.id)
    assert {r["status"] for r in statuses} == {"DONE"}
    assert (
        await db.fetchval(sql("SELECT status::text FROM stories WHERE id = $1"), story.id) == "DONE"
    )


@pytest.mark.parametrize("requeue", ["shutdown", "rescue"])
async def test_a_retried_job_continues_its_own_branch_and_pushes_the_earlier_commits(
    db: Database, tmp_path: Path, requeue: str
) -> None:
    env = await make_env(db, tmp_path)
    started = await start_first_job(db, env)
    job_id, first = started.jobs[0], started.ready
    commit(first.path, "attempt1.txt")
    if requeue == "shutdown":
        assert await rollback_claim(db, env.worker, job_id, reason="shutdown")
    else:
        await db.execute(sql("UPDATE claude_jobs SET lease_until = now() - interval '1 second'"))
        await rescue_expired(db, env.world.user_id, kinds=KINDS, max_retries=2)
    assert (await row(db, job_id))["s"] == "QUEUED"

    await claim(db, env.worker)
    again = await attach_worktree(db, env.ws, env.worker, job_id)
    assert again is not None
    assert again.branch == first.branch
    assert (again.path / "attempt1.txt").is_file()
    # Nothing new in the second attempt, yet the first attempt's commit is still unpushed.
    out = await report(db, env, job_id, "done")
    assert out["status"] == "done"
    assert out["pushed_at"] is not None
    assert commits_between(env.setup.origin, "main", first.branch) == 1
    assert [b for b in branches(env.setup.root) if b.startswith("feat/")] == [first.branch]


async def test_an_active_siblings_worktree_is_never_evicted_for_the_branch(
    db: Database, tmp_path: Path
) -> None:
    # However a second job of the story came to be claimed (another scheduler, a hand edit),
    # the running sibling's worktree holding the branch is left alone: the claim goes back.
    env = await make_env(db, tmp_path)
    started = await start_first_job(db, env, tasks=2)
    (first, second), ready = started.jobs, started.ready
    (ready.path / "work-in-progress.txt").write_text("not committed yet\n")
    await db.execute(
        sql(
            "UPDATE claude_jobs SET status = 'CLAIMED', claimed_by_token_id = $2, "
            "worker_instance_id = $3, claimed_at = now(), lease_until = now() + interval '5 min' "
            "WHERE id = $1"
        ),
        second,
        env.worker.token_id,
        env.worker.instance_id,
    )
    with pytest.raises(WorktreeUnavailable, match=f"by job {first}, which is still claimed"):
        await attach_worktree(db, env.ws, env.worker, second)
    assert (ready.path / "work-in-progress.txt").is_file()
    assert (await row(db, second))["s"] == "QUEUED"


async def test_the_story_settles_in_the_same_statement_as_the_last_task(
    db: Database, tmp_path: Path
) -> None:
    # The task update and the story verdict share one statement (one snapshot): the verdict
    # must count the task just finished, and ignore EXCLUDED tasks.
    env = await make_env(db, tmp_path)  # no worktrees are made: done needs no push
    story = await add_story(db, env.world, tasks=3)
    await db.execute(sql("UPDATE tasks SET status = 'EXCLUDED' WHERE id = $1"), story.task_ids[2])
    story_status = sql("SELECT status::text FROM stories WHERE id = $1")
    before = await db.fetchval(story_status, story.id)
    first, second = [await enqueue(db, env.world, task) for task in story.task_ids[:2]]
    assert await claim(db, env.worker) == first
    assert (await report(db, env, first, "done"))["next_action"] == "wait_for_job_again"
    assert await db.fetchval(story_status, story.id) == before
    assert await claim(db, env.worker) == second
    assert (await report(db, env, second, "done"))["next_action"] == "queue_empty"
    assert await db.fetchval(story_status, story.id) == "DONE"
    tasks = await db.fetch(sql("SELECT status::text AS s FROM tasks WHERE story_id = $1"), story.id)
    assert sorted(row["s"] for row in tasks) == ["DONE", "DONE", "EXCLUDED"]


async def test_a_master_default_branch_is_used_as_the_base(db: Database, tmp_path: Path) -> None:
    env = await make_env(db, tmp_path, default_branch="master")
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    ready = await attach_worktree(db, env.ws, env.worker, job_id)
    assert ready is not None
    assert ready.base_ref == "origin/master"
    stored = await row(db, job_id)
    assert stored["base_sha"] == ready.base_sha
    assert stored["branch"] == ready.branch


async def test_no_repo_root_gives_the_claim_back_with_a_helpful_error(
    db: Database, tmp_path: Path
) -> None:
    env = await make_env(db, tmp_path, configured=False)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    with pytest.raises(WorktreeUnavailable) as caught:
        await attach_worktree(db, env.ws, env.worker, job_id)
    message = str(caught.value)
    assert f"SCRUM4ME_REPO_ROOT_{env.world.product_id}" in message
    assert "repoRoots" in message
    assert "Projects/app" in message
    assert caught.value.transient is False
    stored = await row(db, job_id)
    assert (stored["s"], stored["retry_count"], stored["claimed_by_token_id"]) == (
        "QUEUED",
        0,
        None,
    )
    assert not (env.setup.worktrees / job_id).exists()


async def test_a_rejected_push_stores_failed_and_keeps_the_worktree(
    db: Database, tmp_path: Path
) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    ready = await attach_worktree(db, env.ws, env.worker, job_id)
    assert ready is not None
    commit(ready.path, "mine.txt")
    push_from_other_clone(env.setup, ready.branch, tmp_path / "other")
    out = await report(db, env, job_id, "done")
    assert out["status"] == "failed"
    assert str(out["error"]).startswith("push failed (conflict): ")
    assert out["pushed_at"] is None
    await cleanup_story(db, env.ws, story.id, why="test")
    assert ready.path.is_dir()  # kept for inspection
    assert (
        await db.fetchval(sql("SELECT status::text FROM stories WHERE id = $1"), story.id)
        == "FAILED"
    )


async def test_done_without_changes_is_done_without_a_push(db: Database, tmp_path: Path) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    ready = await attach_worktree(db, env.ws, env.worker, job_id)
    assert ready is not None
    out = await report(db, env, job_id, "done", summary="nothing to change")
    assert (out["status"], out["pushed_at"]) == ("done", None)
    assert ready.branch not in branches(env.setup.origin)


async def test_unpushed_commits_survive_cleanup(db: Database, tmp_path: Path) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    ready = await attach_worktree(db, env.ws, env.worker, job_id)
    assert ready is not None
    tip = commit(ready.path, "precious.txt")
    await report(db, env, job_id, "failed", error="the agent gave up")
    assert await cleanup_story(db, env.ws, story.id, why="test") == [job_id]
    assert not ready.path.exists()
    assert git(env.setup.root, "rev-parse", ready.branch) == tip


async def test_a_ui_cancel_of_the_last_queued_sibling_cleans_up_the_story(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    # Nobody of ours ends the story: the UI cancels its last job. job_status_changed wakes
    # the reactor, which removes the finished sibling's worktree and keeps its pushed branch.
    env = await make_env(db, tmp_path)
    started = await start_first_job(db, env, tasks=2)
    (first, second), ready, story = started.jobs, started.ready, started.story
    commit(ready.path, "first.txt")
    assert (await report(db, env, first, "done"))["pushed_at"] is not None
    settings = settings_for(dsn, env.world.token, tmp_path / "reactor")
    async with running_reactor(db, settings, env.world, presence=False) as reactor:
        CleanupService(reactor, env.ws)
        await cleanup_story(db, env.ws, story.id, why="test")
        assert ready.path.is_dir()  # the second job is still queued
        await db.execute(
            sql("UPDATE claude_jobs SET status = 'CANCELLED', updated_at = now() WHERE id = $1"),
            second,
        )
        await eventually(lambda: not ready.path.exists(), within=10)
    assert ready.branch in branches(env.setup.root)  # delivered and pushed: kept


async def test_catch_up_finds_cleanups_missed_while_away(db: Database, tmp_path: Path) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    ready = await attach_worktree(db, env.ws, env.worker, job_id)
    assert ready is not None
    # Cancelled in the UI while no reactor was listening.
    await db.execute(sql("UPDATE claude_jobs SET status = 'CANCELLED' WHERE id = $1"), job_id)
    assert await catch_up(db, env.ws) == [job_id]
    assert not ready.path.exists()


async def test_status_guards_match_scrum4me_mcp(db: Database, tmp_path: Path) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world, tasks=4)
    jobs = [await enqueue(db, env.world, task) for task in story.task_ids]
    stranger = await make_world(db)
    stranger_worker = await worker_for(db, stranger, "s1")
    await claim(db, env.worker)

    everything = sql("SELECT * FROM claude_jobs ORDER BY id")

    async def refused(worker: Worker, job_id: str, status: Any, **fields: Any) -> str:
        before = await db.fetch(everything)
        with pytest.raises(HandlerError) as caught:
            await update_job_status(
                db,
                env.ws,
                worker,
                StatusReport(job_id, status, **fields),
                kinds=KINDS,
            )
        assert await db.fetch(everything) == before  # a refusal changes nothing
        return str(caught.value)

    assert (
        await refused(env.worker, "cnotajob00000000000000000", "running")
        == "Job cnotajob00000000000000000 not found"
    )
    assert await refused(stranger_worker, jobs[0], "running") == (
        "PERMISSION_DENIED: This job was not claimed by your token"
    )
    assert (await refused(env.worker, jobs[1], "done")).startswith("PERMISSION_DENIED: ")
    assert (await refused(env.worker, jobs[0], "skipped", error="short")).startswith(
        "VALIDATION_ERROR: error"
    )
    assert (await refused(env.worker, jobs[0], "done", summary="x" * 4001)).startswith(
        "VALIDATION_ERROR: summary: at most 4000"
    )
    assert (await refused(env.worker, jobs[0], "failed", error="e" * 2001)).startswith(
        "VALIDATION_ERROR: error"
    )
    assert (await refused(env.worker, "../../etc", "done")).startswith("VALIDATION_ERROR: job_id")
    assert (await refused(env.worker, jobs[0], "done", branch="--force")).startswith(
        "VALIDATION_ERROR: branch"
    )
    await db.execute(sql("UPDATE claude_jobs SET status = 'CANCELLED' WHERE id = $1"), jobs[0])
    assert (await refused(env.worker, jobs[0], "done")).startswith("JOB_CANCELLED: ")
    await db.execute(sql("UPDATE claude_jobs SET status = 'DONE' WHERE id = $1"), jobs[0])
    assert await refused(env.worker, jobs[0], "failed") == "Job is already in terminal state: done"


async def test_a_late_report_from_a_rescued_instance_is_rejected(
    db: Database, tmp_path: Path
) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    await db.execute(sql("UPDATE claude_jobs SET lease_until = now() - interval '1 second'"))
    await rescue_expired(db, env.world.user_id, kinds=KINDS, max_retries=2)
    with pytest.raises(HandlerError, match="lease expired and it went back to the queue"):
        await report(db, env, job_id, "done")
    newcomer = await worker_for(db, env.world, "w2")
    await claim(db, newcomer)
    with pytest.raises(HandlerError, match=r"held by another worker instance \(w2\)"):
        await report(db, env, job_id, "done")
    with pytest.raises(HandlerError, match="held by another worker instance"):
        await job_heartbeat(db, env.worker, job_id, lease_seconds=300)
    assert (await row(db, job_id))["s"] == "CLAIMED"


async def test_running_then_done_keeps_timestamps_in_order_and_stores_usage(
    db: Database, tmp_path: Path
) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    out = await report(db, env, job_id, "running")
    assert (out["status"], out["next_action"]) == ("running", "idle")
    out = await report(
        db,
        env,
        job_id,
        "done",
        summary="ok",
        model_id="claude-x",
        input_tokens=10,
        output_tokens=20,
    )
    stored = await row(db, job_id)
    assert stored["claimed_at"] <= stored["started_at"] <= stored["finished_at"]  # type: ignore[operator]
    assert (stored["model_id"], stored["input_tokens"], stored["output_tokens"]) == (
        "claude-x",
        10,
        20,
    )
    assert stored["lease_until"] is None


async def test_next_action_counts_only_jobs_this_worker_could_claim(
    db: Database, tmp_path: Path
) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world, tasks=2)
    first = await enqueue(db, env.world, story.task_ids[0])
    codex = await enqueue(db, env.world, story.task_ids[1])
    await db.execute(sql("UPDATE claude_jobs SET runtime = 'CODEX' WHERE id = $1"), codex)
    await enqueue(db, env.world, None, kind="PLAN_CHAT")
    await claim(db, env.worker)
    out = await report(db, env, first, "failed", error="boom")
    assert out["next_action"] == "queue_empty"


async def test_texts_that_overflow_the_notification_are_stored_and_left_out_of_it(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    # JSON writes each control character as six bytes: 1,000 + 500 of them would pass the
    # 8,000-byte NOTIFY limit and, before, failed the whole report.
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    heard: list[str] = []
    session = await ListenSession.open(
        dsn, ["scrum4me_changes"], lambda _c, payload: heard.append(payload), lambda: None,
        application_name="test-overflow",
    )  # fmt: skip
    try:
        summary, error = "\x1b" * SUMMARY_MAX, "\x1b" * ERROR_MAX
        out = await report(db, env, job_id, "failed", summary=summary, error=error)
        assert (out["status"], out["summary"], out["error"]) == ("failed", summary, error)
        await eventually(lambda: any(job_id in p and "failed" in p for p in heard), within=5)
    finally:
        await session.close()
    message = json.loads(next(p for p in heard if job_id in p and "failed" in p))
    assert message["texts_omitted"] is True
    assert "summary" not in message
    stored = await row(db, job_id)
    assert (stored["summary"], stored["error"]) == (summary, error)


async def test_skipped_is_allowed_with_a_reason(db: Database, tmp_path: Path) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    out = await report(db, env, job_id, "skipped", error="already implemented upstream")
    assert out["status"] == "skipped"


async def test_a_hostile_branch_stored_by_a_sibling_rolls_the_claim_back(
    db: Database, tmp_path: Path
) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world, tasks=2)
    first, second = [await enqueue(db, env.world, task) for task in story.task_ids]
    await db.execute(
        sql(
            "UPDATE claude_jobs SET status = 'DONE', branch = '--upload-pack=touch /tmp/x' "
            "WHERE id = $1"
        ),
        first,
    )
    await claim(db, env.worker)
    with pytest.raises(WorktreeUnavailable, match="branch"):
        await attach_worktree(db, env.ws, env.worker, second)
    assert (await row(db, second))["s"] == "QUEUED"
    assert not (env.setup.worktrees / second).exists()


async def test_job_heartbeat_extends_the_lease(db: Database, tmp_path: Path) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world)
    job_id = await enqueue(db, env.world, story.task_ids[0])
    await claim(db, env.worker)
    await db.execute(sql("UPDATE claude_jobs SET lease_until = now() + interval '10 seconds'"))
    out = await job_heartbeat(db, env.worker, job_id, lease_seconds=300)
    assert out["ok"] is True
    assert (out["sprint_run_status"], out["sprint_run_pause_reason"]) == (None, None)
    assert await db.fetchval(
        sql("SELECT lease_until > now() + interval '4 minutes' FROM claude_jobs WHERE id = $1"),
        job_id,
    )


async def test_check_queue_empty_counts_accessible_products_only(
    db: Database, tmp_path: Path
) -> None:
    env = await make_env(db, tmp_path)
    story = await add_story(db, env.world, tasks=2)
    for task in story.task_ids:
        await enqueue(db, env.world, task)
    other = await make_world(db)
    assert await check_queue_empty(db, env.worker, None) == {
        "empty": False,
        "remaining": 2,
        "by_product": {env.world.product_id: 2},
    }
    assert await check_queue_empty(db, env.worker, env.world.product_id) == {
        "empty": False,
        "remaining": 2,
    }
    with pytest.raises(HandlerError, match="not found or not accessible"):
        await check_queue_empty(db, env.worker, other.product_id)


async def test_demo_users_cannot_write(db: Database, tmp_path: Path) -> None:
    world = await make_world(db, demo=True)
    worker = await worker_for(db, world, "demo")
    with pytest.raises(HandlerError, match="PERMISSION_DENIED: Demo accounts"):
        await check_queue_empty(db, worker, None)


async def test_cleanup_my_worktrees_sorts_removed_kept_and_skipped(
    db: Database, tmp_path: Path
) -> None:
    env = await make_env(db, tmp_path)
    story_a = await add_story(db, env.world)
    story_b = await add_story(db, env.world)
    done_job = await enqueue(db, env.world, story_a.task_ids[0])
    active_job = await enqueue(db, env.world, story_b.task_ids[0])
    for job_id in (done_job, active_job):
        await claim(db, env.worker)
        assert await attach_worktree(db, env.ws, env.worker, job_id) is not None
    await report(db, env, done_job, "failed", error="boom")
    (env.setup.worktrees / "stray-dir").mkdir()
    (env.setup.worktrees / "x.lock").mkdir()
    result = await cleanup_my_worktrees(db, env.ws, env.worker)
    assert (result.removed, result.kept, result.skipped) == (
        [done_job],
        [active_job],
        ["stray-dir"],
    )
    assert not (env.setup.worktrees / done_job).exists()
