"""Build Scrum4Me rows for tests through the same seed queries the demo uses."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from reactor.db import Database
from reactor.ids import new_cuid
from reactor.sqlfiles import query


@dataclass
class World:
    user_id: str
    token: str
    token_id: str
    product_id: str
    pbi_id: str
    sprint_id: str
    stories: list[Story] = field(default_factory=list)


@dataclass
class Story:
    id: str
    task_ids: list[str]


async def make_user(db: Database, *, demo: bool = False) -> tuple[str, str, str]:
    """A user with one API token; returns (user_id, raw token, token id)."""
    user_id = new_cuid()
    await db.fetchval(query("seed.insert_user"), user_id, f"user-{user_id[-8:]}", demo)
    token = "s4m_" + secrets.token_hex(16)
    token_id = new_cuid()
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    await db.fetchval(query("seed.insert_api_token"), token_id, user_id, token_hash, "test")
    return user_id, token, token_id


async def make_world(
    db: Database,
    *,
    repo_url: str | None = "https://example.invalid/acme/app.git",
    demo: bool = False,
) -> World:
    user_id, token, token_id = await make_user(db, demo=demo)
    product_id = new_cuid()
    code = product_id[-6:].upper()
    await db.fetchval(
        query("seed.insert_product"), product_id, user_id, f"Product {code}", code, repo_url
    )
    pbi_id = new_cuid()
    await db.fetchval(query("seed.insert_pbi"), pbi_id, product_id, "PBI-1", "A backlog item", 1)
    sprint_id = new_cuid()
    await db.fetchval(query("seed.insert_sprint"), sprint_id, product_id, "S1", "Ship it")
    return World(user_id, token, token_id, product_id, pbi_id, sprint_id)


async def add_story(
    db: Database,
    world: World,
    tasks: int = 1,
    *,
    repo_url: str | None = None,
    plan: str | None = "Do it.",
) -> Story:
    story_id = new_cuid()
    index = len(world.stories) + 1
    await db.fetchval(
        query("seed.insert_story"),
        story_id,
        world.pbi_id,
        world.product_id,
        world.sprint_id,
        f"ST-{index}-{story_id[-4:]}",
        f"Story {index}",
        index,
    )
    task_ids = []
    for number in range(1, tasks + 1):
        task_id = new_cuid()
        await db.fetchval(
            query("seed.insert_task"),
            task_id,
            story_id,
            world.product_id,
            world.sprint_id,
            f"T-{index}-{number}-{task_id[-4:]}",
            f"Task {index}.{number}",
            plan,
            number,
            repo_url,
        )
        task_ids.append(task_id)
    story = Story(story_id, task_ids)
    world.stories.append(story)
    return story


async def add_sprint_run(db: Database, world: World, strategy: str = "STORY") -> str:
    run_id = new_cuid()
    await db.fetchval(
        query("seed.insert_sprint_run"), run_id, world.sprint_id, world.user_id, strategy
    )
    return run_id


async def enqueue(
    db: Database,
    world: World,
    task_id: str | None,
    *,
    kind: str = "TASK_IMPLEMENTATION",
    sprint_run_id: str | None = None,
    sequence: int | None = None,
    user_id: str | None = None,
) -> str:
    job_id = new_cuid()
    await db.fetchrow(
        query("seed.enqueue_job"),
        job_id,
        user_id or world.user_id,
        world.product_id,
        task_id,
        sprint_run_id,
        kind,
        sequence,
    )
    return job_id
