"""A worktree that cannot be made: the claim goes back, the error says why, no hot loop.

Root ignores permission bits, so "unwritable" is made with what root cannot get past either:
a worktree directory whose path runs through a regular file, or a clone whose
``.git/worktrees`` is a file. A full disk needs a mount, which these tests do not make.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from reactor.config import Settings
from reactor.db import Database
from tests.factory import World, add_story, enqueue, make_world
from tests.gitrepo import Setup, branches, git, make_setup
from tests.reliability.support import (
    jobs_by_id,
    mcp_client,
    process_group,
    running_daemon,
    sql,
    text_of,
)
from tests.running import settings_for
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(60)

INSTANCE = "wt-host"
KINDS = "TASK_IMPLEMENTATION,PLAN_CHAT"


@dataclass
class Scene:
    world: World
    setup: Setup
    worktree_dir: Path
    blocker: Path | None

    def env(self) -> dict[str, str]:
        return {
            "SCRUM4ME_AGENT_WORKTREE_DIR": str(self.worktree_dir),
            f"SCRUM4ME_REPO_ROOT_{self.world.product_id}": str(self.setup.root),
        }

    def settings(self, dsn: str, home: Path) -> Settings:
        return settings_for(
            dsn,
            self.world.token,
            home,
            REACTOR_HEALTH_PORT="0",
            SCRUM4ME_INSTANCE_ID=INSTANCE,
            **self.env(),
        )


async def scene(db: Database, tmp_path: Path, *, under_a_file: bool) -> Scene:
    world = await make_world(db, repo_url="https://git.example.invalid/acme/app.git")
    setup = make_setup(tmp_path / "repo")
    if not under_a_file:
        return Scene(world, setup, setup.worktrees, None)
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file where a directory should be\n")
    return Scene(world, setup, blocker / "worktrees", blocker)


def registered_worktrees(root: Path) -> list[str]:
    out = git(root, "worktree", "list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


async def given_back(db: Database, job_id: str) -> Any:
    row = (await jobs_by_id(db, [job_id]))[job_id]
    return (row["status"], row["retry_count"], row["worker_instance_id"])


async def test_an_unusable_worktree_dir_gives_the_job_back_naming_the_path_and_cools_it_down(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    sc = await scene(db, tmp_path, under_a_file=True)
    story = await add_story(db, sc.world)
    async with (
        running_daemon(sc.settings(dsn, tmp_path), db) as daemon,
        mcp_client(daemon.port, sc.world.token, INSTANCE) as client,
    ):
        job_id = await enqueue(db, sc.world, story.task_ids[0])
        first = await client.call_tool("wait_for_job", {"wait_seconds": 10})
        assert first.is_error
        assert str(sc.worktree_dir) in text_of(first), text_of(first)
        assert await given_back(db, job_id) == ("QUEUED", 0, None)
        # Cooling down: the next call waits out its window instead of claiming it again.
        again = await client.call_tool("wait_for_job", {"wait_seconds": 2})
        assert not again.is_error, text_of(again)
        assert json.loads(text_of(again))["status"] == "timeout"
    assert sc.blocker is not None
    assert sc.blocker.is_file()
    assert branches(sc.setup.root) == {"main"}
    assert registered_worktrees(sc.setup.root) == [str(sc.setup.root)]


async def test_a_daemon_whose_worktree_dir_is_unusable_gives_the_job_back_and_keeps_running(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    sc = await scene(db, tmp_path, under_a_file=True)
    story = await add_story(db, sc.world)
    with process_group(tmp_path / "procs", dsn, sc.world.token) as group:
        process = group.start(
            INSTANCE, "true", REACTOR_WORKTREES="on", REACTOR_KINDS=KINDS, **sc.env()
        )
        await eventually(process.ready, within=30)
        job_id = await enqueue(db, sc.world, story.task_ids[0])

        def prepare_failed() -> list[dict[str, Any]]:
            process.alive()
            return [r for r in process.named("job.prepare_failed") if r.get("job_id") == job_id]

        await eventually(lambda: bool(prepare_failed()), within=20)
        assert str(sc.worktree_dir) in prepare_failed()[0]["why"]
        assert await given_back(db, job_id) == ("QUEUED", 0, None)
        # A job that needs no worktree still runs: one slot, so had the failed job not been
        # cooling down, the older job would have been claimed again instead.
        other = await enqueue(db, sc.world, None, kind="PLAN_CHAT")

        async def other_done() -> bool:
            process.alive()
            return bool((await jobs_by_id(db, [other]))[other]["status"] == "DONE")

        await eventually(other_done, within=20)
        assert process.claimed().count(job_id) == 1


async def test_a_worktree_git_cannot_create_is_given_back_with_gits_reason_and_cools_down(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    sc = await scene(db, tmp_path, under_a_file=False)
    # The clone's administrative directory for worktrees cannot be created.
    (sc.setup.root / ".git" / "worktrees").write_text("in the way\n")
    story = await add_story(db, sc.world)
    async with (
        running_daemon(sc.settings(dsn, tmp_path), db) as daemon,
        mcp_client(daemon.port, sc.world.token, INSTANCE) as client,
    ):
        job_id = await enqueue(db, sc.world, story.task_ids[0])
        first = await client.call_tool("wait_for_job", {"wait_seconds": 10})
        assert first.is_error
        message = text_of(first)
        assert message.startswith("Worktree creation failed: ")
        assert ".git/worktrees" in message, message
        assert await given_back(db, job_id) == ("QUEUED", 0, None)
        again = await client.call_tool("wait_for_job", {"wait_seconds": 2})
        assert json.loads(text_of(again))["status"] == "timeout"
    assert not (sc.worktree_dir / job_id).exists()
    assert registered_worktrees(sc.setup.root) == [str(sc.setup.root)]
    assert await db.fetchval(sql("SELECT branch FROM claude_jobs WHERE id = $1"), job_id) is None


async def test_a_failed_worktree_add_leaves_no_new_branch_behind(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    sc = await scene(db, tmp_path, under_a_file=False)
    (sc.setup.root / ".git" / "worktrees").write_text("in the way\n")
    story = await add_story(db, sc.world)
    async with (
        running_daemon(sc.settings(dsn, tmp_path), db) as daemon,
        mcp_client(daemon.port, sc.world.token, INSTANCE) as client,
    ):
        await enqueue(db, sc.world, story.task_ids[0])
        first = await client.call_tool("wait_for_job", {"wait_seconds": 10})
        assert first.is_error
    assert branches(sc.setup.root) == {"main"}


async def test_wait_for_job_over_http_with_its_own_instance_gets_a_worktree(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    sc = await scene(db, tmp_path, under_a_file=False)
    story = await add_story(db, sc.world)
    async with (
        running_daemon(sc.settings(dsn, tmp_path), db) as daemon,
        mcp_client(daemon.port, sc.world.token) as client,  # instance http-<token id>
    ):
        job_id = await enqueue(db, sc.world, story.task_ids[0])
        result = await client.call_tool("wait_for_job", {"wait_seconds": 10})
        row = (await jobs_by_id(db, [job_id]))[job_id]
        assert not result.is_error, (text_of(result), row["status"], row["worker_instance_id"])
        payload = json.loads(text_of(result))
    assert payload["job_id"] == job_id
    assert await trio.Path(payload["worktree_path"]).is_dir()
