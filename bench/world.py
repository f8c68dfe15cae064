"""A Scrum4Me database for the reactor: schema, one user with a token, stories, tasks, jobs.

Rows are written the way the app writes them (sql/queries/seed.sql: client-side cuids, no
NOTIFY by hand); the reactor's triggers do the announcing. Only the bulk job insert of the
throughput benchmark is our own statement, so that 10,000 jobs land in one transaction with
strictly increasing ``created_at`` (story order is ``created_at, id``).
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from dataclasses import dataclass, field

import asyncpg

from bench.common import run_checked
from reactor.ids import new_cuid
from reactor.sqlfiles import query

KIND = "TASK_IMPLEMENTATION"

_BULK_JOBS = """
INSERT INTO claude_jobs (id, user_id, product_id, task_id, kind, updated_at, created_at)
SELECT j.id, $2, $3, j.task_id, 'TASK_IMPLEMENTATION', now(), clock_timestamp()
FROM unnest($1::text[], $4::text[]) WITH ORDINALITY AS j(id, task_id, ord)
ORDER BY j.ord
"""


@dataclass
class World:
    dsn: str
    user_id: str
    token: str
    token_id: str
    product_id: str
    pbi_id: str
    sprint_id: str
    stories: list[list[str]] = field(default_factory=list)  # task ids per story

    @property
    def task_ids(self) -> list[str]:
        return [task for story in self.stories for task in story]


def migrate(dsn: str) -> None:
    """The product's own path: ``reactor migrate --with-app-schema`` on the empty database."""
    run_checked(
        [sys.executable, "-m", "reactor", "migrate", "--with-app-schema"],
        env={"DATABASE_URL": dsn, "REACTOR_LOG_LEVEL": "warning"},
    )


async def make_world(dsn: str, *, stories: int = 1, tasks: int = 1) -> World:
    migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        user_id = new_cuid()
        await conn.fetchval(query("seed.insert_user").text, user_id, f"bench-{user_id[-8:]}", False)
        token = "s4m_" + secrets.token_hex(16)
        digest = hashlib.sha256(token.encode()).hexdigest()
        token_id = new_cuid()
        await conn.fetchval(query("seed.insert_api_token").text, token_id, user_id, digest, "bench")
        product_id = new_cuid()
        await conn.fetchval(
            query("seed.insert_product").text,
            product_id,
            user_id,
            "Bench",
            "BENCH",
            "https://example.invalid/bench/app.git",
        )
        pbi_id, sprint_id = new_cuid(), new_cuid()
        await conn.fetchval(query("seed.insert_pbi").text, pbi_id, product_id, "PBI-1", "Bench", 1)
        await conn.fetchval(query("seed.insert_sprint").text, sprint_id, product_id, "S1", "Go")
        world = World(dsn, user_id, token, token_id, product_id, pbi_id, sprint_id)
        story_rows, task_rows = [], []
        for s in range(1, stories + 1):
            story_id = new_cuid()
            story_rows.append((story_id, pbi_id, product_id, sprint_id, f"ST-{s}", f"Story {s}", s))
            ids = []
            for t in range(1, tasks + 1):
                task_id = new_cuid()
                ids.append(task_id)
                task_rows.append(
                    (task_id, story_id, product_id, sprint_id, f"T-{s}-{t}", f"Task {s}.{t}",
                     "Do it.", t, None)
                )  # fmt: skip
            world.stories.append(ids)
        async with conn.transaction():
            await conn.executemany(query("seed.insert_story").text, story_rows)
            await conn.executemany(query("seed.insert_task").text, task_rows)
    finally:
        await conn.close()
    return world


async def insert_jobs(conn: asyncpg.Connection, world: World) -> list[str]:
    """One QUEUED job per task, story by story, in one transaction."""
    task_ids = world.task_ids
    job_ids = [new_cuid() for _ in task_ids]
    await conn.execute(_BULK_JOBS, job_ids, world.user_id, world.product_id, task_ids)
    return job_ids


async def enqueue(conn: asyncpg.Connection, world: World, task_id: str) -> str:
    """Exactly what the UI's enqueue action sends (seed.enqueue_job)."""
    job_id = new_cuid()
    await conn.fetchrow(
        query("seed.enqueue_job").text,
        job_id,
        world.user_id,
        world.product_id,
        task_id,
        None,
        KIND,
        None,
    )
    return job_id


def reactor_env(world: World, home: str, instance: str) -> dict[str, str]:
    """The environment of a reactor process (product defaults, worktrees off)."""
    return {
        "DATABASE_URL": world.dsn,
        "SCRUM4ME_TOKEN": world.token,
        "SCRUM4ME_INSTANCE_ID": instance,
        "REACTOR_WORKTREES": "off",
        "HOME": home,
        "REACTOR_LOG_LEVEL": "info",
    }
