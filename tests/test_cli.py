"""The ``reactor`` command as a user runs it: a real process, a real PostgreSQL, exit codes.

Every test starts the CLI with a minimal environment whose HOME and XDG directories live in
the test's tmp_path, so neither the developer's settings nor the real
``~/.local/share/reactor`` can leak in. DATABASE_URL is given everywhere but in one migrate
test, which starts the embedded default in its tmp_path on purpose (the only other embedded
start is tests/test_demo.py's).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio

from reactor.db import Database, ListenSession
from reactor.ids import new_cuid
from reactor.sqlfiles import Query, load_migrations, query
from tests.factory import World, add_story, enqueue, make_user, make_world
from tests.gitrepo import make_setup
from tests.pg import PgServer, embedded_server_stopped, unique_name
from tests.waiting import eventually

REACTOR = (sys.executable, "-m", "reactor")
COMMANDS = ("run", "mcp", "migrate", "enqueue", "status", "demo")
CUID = re.compile(r"^c[0-9a-z]{24}$")
# Port 1 on loopback refuses at once: the fastest way to get "connection refused".
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/x"
POOLER = "postgresql://u@ep-x-pooler.neon.tech/db"
# Our own refusals say "reactor: error:", argparse's say "reactor enqueue: error:".
ERROR_LINE = re.compile(r"^reactor( [a-z]+)?: error: ")


def sql(text: str) -> Query:
    return Query("test", text)


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str
    seconds: float

    def error_line(self) -> str:
        """The one-line ``reactor[ command]: error: ...`` message (empty if there is none)."""
        lines = [line for line in self.err.splitlines() if ERROR_LINE.match(line)]
        return lines[-1] if lines else ""


def cli_env(tmp_path: Path, *overrides: Mapping[str, str], **extra: str) -> dict[str, str]:
    """A minimal environment: nothing from the developer's shell except PATH."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"),
        **extra,
    }
    for more in overrides:
        env.update(more)
    return env


def reactor_cli(env: Mapping[str, str], *args: str, timeout: float = 60) -> Outcome:
    start = time.monotonic()
    done = subprocess.run(
        [*REACTOR, *args],
        env=dict(env),
        cwd=env["HOME"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        check=False,
    )
    return Outcome(done.returncode, done.stdout, done.stderr, time.monotonic() - start)


async def run_cli(env: Mapping[str, str], *args: str) -> Outcome:
    """The blocking run in a worker thread, so the trio run (and its fixtures) stay alive."""
    return await trio.to_thread.run_sync(functools.partial(reactor_cli, env, *args))


async def run_many(calls: list[tuple[Mapping[str, str], tuple[str, ...]]]) -> list[Outcome]:
    """Independent CLI runs side by side: the interpreter start-up dominates their cost."""
    results: list[Outcome | None] = [None] * len(calls)

    async def one(index: int, env: Mapping[str, str], args: tuple[str, ...]) -> None:
        results[index] = await run_cli(env, *args)

    async with trio.open_nursery() as nursery:
        for index, (env, args) in enumerate(calls):
            nursery.start_soon(one, index, env, args)
    return [result for result in results if result is not None]


def assert_refused(result: Outcome, code: int, *needles: str) -> None:
    """A clean refusal: the documented exit code and one readable line, no traceback."""
    assert result.code == code, result.err
    assert "Traceback" not in result.err, result.err
    line = result.error_line()
    for needle in needles:
        assert needle in line, result.err


async def job_count(db: Database) -> int:
    return int(await db.fetchval(sql("SELECT count(*) FROM claude_jobs")))


async def job_row(db: Database, job_id: str) -> dict[str, Any]:
    row = await db.fetchrow(
        sql(
            "SELECT user_id, product_id, task_id, kind::text AS kind, status::text AS status, "
            "runtime::text AS runtime, created_at, updated_at FROM claude_jobs WHERE id = $1"
        ),
        job_id,
    )
    assert row is not None, f"job {job_id} was not stored"
    return dict(row)


async def set_status(db: Database, job_id: str, status: str, instance: str = "w-1") -> None:
    await db.execute(
        sql(
            'UPDATE claude_jobs SET status = $2::"ClaudeJobStatus", claimed_at = now(), '
            "worker_instance_id = $3, "
            "started_at = CASE WHEN $2 IN ('RUNNING', 'DONE') THEN now() END, "
            "finished_at = CASE WHEN $2 = 'DONE' THEN now() END, updated_at = now() "
            "WHERE id = $1"
        ),
        job_id,
        status,
        instance,
    )


async def register_worker(db: Database, world: World, instance: str) -> None:
    await db.fetchrow(
        query("presence.register"),
        new_cuid(),
        world.user_id,
        world.token_id,
        instance,
        "test-host",
        4242,
        [],
        None,
    )


@pytest.fixture(scope="module")
def shared_dsn(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """One migrated database for the refusals that must not write anything anyway."""
    name = unique_name("reactor_cli")
    url = pg_server.create_database(name, template=template_db)
    yield url
    pg_server.drop_database(name)


# --- help ------------------------------------------------------------------------------------


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_configuration() -> dict[str, str]:
    """The README's Configuration table: every ``| `NAME` | default |`` row, backticks gone."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| ([^|]*) \|", section, re.M)
    return {name: default.strip().replace("`", "") for name, default in rows}


def flat(text: str) -> str:
    """Help text with its wrapping undone: one space wherever there was any whitespace."""
    return " ".join(text.split())


def environment_entries(help_text: str) -> list[str]:
    """The variable names listed in the ``environment`` section of a help text, in order."""
    section = help_text.split("\nenvironment (", 1)[1].split("\n\n", 1)[0]
    return re.findall(r"^  (\S+) \(", section, re.M)


def test_the_readme_configuration_table_is_found() -> None:
    # Guards the parser below: a changed table layout must fail loudly, not check nothing.
    settings = readme_configuration()
    assert len(settings) >= 30, settings
    assert settings["REACTOR_HEALTH_PORT"] == "8080"
    assert settings["SCRUM4ME_TOKEN"] == "—"


def test_run_help_explains_every_readme_setting_with_the_readmes_default(tmp_path: Path) -> None:
    result = reactor_cli(cli_env(tmp_path), "run", "--help")
    assert result.code == 0, result.err
    text = flat(result.out)
    for name, default in readme_configuration().items():
        if default == "—":
            assert name in text, name
        else:
            # The default as the README states it opens the variable's entry.
            assert f"{name} (default: {default}" in text, (name, default)
    daemon_only = set(readme_configuration()) - {"SCRUM4ME_JOB_ID"}  # mcp reads that one
    assert daemon_only <= set(environment_entries(result.out))


async def test_each_commands_help_lists_the_variables_that_command_reads(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    results = await run_many([(env, (command, "--help")) for command in COMMANDS])
    listed = {
        command: environment_entries(result.out)
        for command, result in zip(COMMANDS, results, strict=True)
    }
    readme = set(readme_configuration())
    # Every README setting is explained by at least one command, in the README's words.
    assert readme <= {name for names in listed.values() for name in names}
    for command in ("run", "mcp", "migrate", "enqueue", "status"):
        assert {"DATABASE_URL", "DIRECT_URL", "REACTOR_DATA_DIR"} <= set(listed[command])
        assert "REACTOR_LOG_LEVEL" in listed[command]
    for command in ("run", "mcp", "enqueue", "status"):
        assert "SCRUM4ME_TOKEN" in listed[command]
    assert {"SCRUM4ME_JOB_ID", "REACTOR_KINDS", "SCRUM4ME_AGENT_WORKTREE_DIR"} <= set(listed["mcp"])
    assert "REACTOR_HEALTH_PORT" not in listed["mcp"]
    assert set(listed["migrate"]) == {
        "DATABASE_URL",
        "DIRECT_URL",
        "REACTOR_DATA_DIR",
        "REACTOR_LOG_LEVEL",
        "REACTOR_LOG_FORMAT",
    }
    # The demo uses the embedded server and its own token whatever the environment says.
    assert "REACTOR_DATA_DIR" in listed["demo"]
    assert not {"DATABASE_URL", "DIRECT_URL", "SCRUM4ME_TOKEN"} & set(listed["demo"])


def test_top_level_help_names_the_environment_and_the_exit_codes(tmp_path: Path) -> None:
    result = reactor_cli(cli_env(tmp_path), "--help")
    assert result.code == 0, result.err
    for name in ("DATABASE_URL", "DIRECT_URL", "SCRUM4ME_TOKEN", *COMMANDS):
        assert name in result.out
    assert "exit codes: 0 ok, 1 failure, 2 usage/configuration, 3 database, 4 token" in (
        " ".join(result.out.split())
    )


async def test_every_command_has_help_that_exits_zero_within_100_columns(
    tmp_path: Path,
) -> None:
    # A wide terminal must not make the help wider than 100 columns.
    env: Mapping[str, str] = cli_env(tmp_path, COLUMNS="250")
    calls = [(env, ("--help",)), *((env, (command, "--help")) for command in COMMANDS)]
    results = await run_many(calls)
    for (_env, args), result in zip(calls, results, strict=True):
        assert result.code == 0, (args, result.err)
        usage = "usage: reactor " + ("" if args[0] == "--help" else f"{args[0]} ")
        assert result.out.startswith(usage), (args, result.out)
        too_wide = [line for line in result.out.splitlines() if len(line) > 100]
        assert too_wide == [], (args, too_wide)
        assert "exit codes: 0 ok" in result.out, args


def test_every_option_is_explained_with_its_default() -> None:
    from reactor.cli import _parser

    parser = _parser()
    subparsers = [
        action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
    ]
    assert len(subparsers) == 1
    commands: dict[str, argparse.ArgumentParser] = dict(subparsers[0].choices)
    assert sorted(commands) == sorted(COMMANDS)
    for name, command in [("reactor", parser), *commands.items()]:
        for action in command._actions:
            if not action.option_strings or action.dest in ("help", "version"):
                continue
            assert action.help, (name, action.option_strings)
            if action.nargs != 0:  # takes a value: say what happens without it
                assert "default" in action.help or "required" in action.help, (
                    name,
                    action.option_strings,
                )


def test_run_and_friends_say_what_they_need_and_where_they_connect(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    run, mcp, migrate_help, enqueue_help, top = (
        flat(reactor_cli(env, *args).out)
        for args in (
            ("run", "--help"),
            ("mcp", "--help"),
            ("migrate", "--help"),
            ("enqueue", "--help"),
            ("--help",),
        )
    )
    assert "SCRUM4ME_TOKEN is required" in run
    assert "SCRUM4ME_TOKEN (required)" in run
    assert "Queries go to DATABASE_URL and the LISTEN session to DIRECT_URL" in run
    for option, variable in (
        ("--agent-command", "REACTOR_AGENT_COMMAND"),
        ("--concurrency", "REACTOR_CONCURRENCY"),
        ("--port", "REACTOR_HEALTH_PORT"),
        ("--host", "REACTOR_HTTP_HOST"),
        ("--kinds", "REACTOR_KINDS"),
    ):
        assert f"{option} overrides it" in run, option
        assert f"env {variable}" in run, option
    assert "SCRUM4ME_TOKEN is required" in mcp
    assert "(env REACTOR_KINDS, default TASK_IMPLEMENTATION;" in mcp
    assert "Connects to DIRECT_URL when it is set, else DATABASE_URL" in migrate_help
    # --kind shows its choices in the help, not only a metavar.
    assert "job kind, one of TASK_IMPLEMENTATION, IDEA_GRILL," in enqueue_help
    assert "DOCS_AUDIT (default TASK_IMPLEMENTATION)" in enqueue_help
    assert "-v, --verbose migrate, enqueue and status: log at REACTOR_LOG_LEVEL" in top
    # The top-level list says which commands read each variable.
    assert "Read by: run, mcp, migrate, enqueue, status, demo." in top


async def test_verbose_works_before_and_after_a_one_shot_command(
    tmp_path: Path, shared_dsn: str
) -> None:
    env = cli_env(tmp_path, DATABASE_URL=shared_dsn, REACTOR_LOG_FORMAT="json")
    quiet, before, after = await run_many(
        [(env, ("migrate",)), (env, ("-v", "migrate")), (env, ("migrate", "-v"))]
    )
    steps = []
    for result in (quiet, before, after):
        assert result.code == 0, result.err
        events = [json.loads(line) for line in result.err.splitlines()]
        steps.append([event["migration"] for event in events if event["event"] == "migrate.step"])
    # migrate.step is logged at info: only -v (REACTOR_LOG_LEVEL's default) shows it.
    assert steps[0] == []
    assert steps[1] == steps[2] != []


# --- migrate ---------------------------------------------------------------------------------


def test_migrate_on_a_migrated_database_says_everything_is_already_applied(
    tmp_path: Path, dsn: str
) -> None:
    result = reactor_cli(cli_env(tmp_path, DATABASE_URL=dsn), "migrate")
    assert result.code == 0, result.err
    assert result.out.startswith(f"migrate: database {dsn} (from DATABASE_URL)\n"), result.out
    assert "0 applied" in result.out
    assert re.search(r"\b[1-9]\d* already applied", result.out), result.out


def with_password(dsn: str, password: str) -> str:
    """``dsn`` with a password in its user info and in the query string (trust auth ignores
    both; the test server accepts any password)."""
    parts = urlsplit(dsn)
    user, _, host = parts.netloc.rpartition("@")
    query = "&".join(piece for piece in (parts.query, f"password={password}-q") if piece)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}", query=query))


def test_migrate_prints_the_direct_url_it_uses_with_the_password_masked(
    tmp_path: Path, dsn: str
) -> None:
    secret = "s3cret-" + new_cuid()
    direct = with_password(dsn, secret)
    env = cli_env(tmp_path, DATABASE_URL="postgresql://other@db.invalid/x", DIRECT_URL=direct)
    result = reactor_cli(env, "migrate", "-v")
    assert result.code == 0, result.err
    first = result.out.splitlines()[0]
    assert first.startswith("migrate: database "), result.out
    assert first.endswith(" (from DIRECT_URL)"), first
    assert ":***@" in first
    assert "password=***" in first
    assert secret not in result.out + result.err


async def test_migrate_on_an_empty_database_exits_3_names_the_flag_and_creates_nothing(
    tmp_path: Path, empty_dsn: str, aio_loop: None
) -> None:
    result = await run_cli(cli_env(tmp_path, DATABASE_URL=empty_dsn), "migrate")
    assert_refused(result, 3, "--with-app-schema")
    db = await Database.connect(empty_dsn, max_size=1)
    try:
        tables = await db.fetchval(
            sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        )
    finally:
        await db.close()
    assert tables == 0


def test_migrate_with_app_schema_builds_an_empty_database_and_is_idempotent(
    tmp_path: Path, empty_dsn: str
) -> None:
    env = cli_env(tmp_path, DATABASE_URL=empty_dsn)
    first = reactor_cli(env, "migrate", "--with-app-schema")
    assert first.code == 0, first.err
    assert "app schema created" in first.out
    assert "0 already applied" in first.out
    second = reactor_cli(env, "migrate", "--with-app-schema")
    assert second.code == 0, second.err
    assert "0 applied" in second.out
    assert "app schema present (left untouched)" in second.out


async def test_migrate_on_the_embedded_default_names_it_and_reports_what_it_created(
    tmp_path: Path,
) -> None:
    # No DATABASE_URL: the embedded server, initialised in this test's XDG data directory.
    (tmp_path / "tmp").mkdir()
    env = cli_env(tmp_path, TMPDIR=str(tmp_path / "tmp"))
    data_dir = tmp_path / "xdg-data" / "reactor"
    migrations = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    first = await run_cli(env, "migrate")
    assert first.code == 0, first.err
    lines = first.out.splitlines()
    assert lines[0].startswith(f"migrate: using the embedded PostgreSQL in {data_dir} "), lines
    assert "DATABASE_URL is not set" in lines[0]
    assert re.fullmatch(r"migrate: database postgresql://postgres@/scrum4me\?host=\S+", lines[1])
    # Starting the server created the app schema and applied everything: the report says so.
    assert lines[2:] == [
        "app schema: created",
        *(f"{label}: applied" for label in migrations),
        f"migrate: {len(migrations)} applied, 0 already applied; app schema created",
    ]
    second = await run_cli(env, "migrate")
    assert second.code == 0, second.err
    assert second.out.splitlines()[:2] == lines[:2]
    assert second.out.splitlines()[2:] == [
        "app schema: present (left untouched)",
        *(f"{label}: already applied" for label in migrations),
        f"migrate: 0 applied, {len(migrations)} already applied; "
        "app schema present (left untouched)",
    ]
    # The server stops with its last user.
    pgdata = data_dir / "pgdata"
    await eventually(
        lambda: embedded_server_stopped(pgdata),
        within=10,
    )


def test_migrate_refuses_direct_url_without_database_url(tmp_path: Path) -> None:
    env = cli_env(tmp_path, DIRECT_URL=UNREACHABLE)
    result = reactor_cli(env, "migrate")
    assert_refused(result, 2, "DIRECT_URL is set but DATABASE_URL is not")
    assert not (tmp_path / "xdg-data").exists()  # no embedded server was started


# --- enqueue ---------------------------------------------------------------------------------


async def test_enqueue_prints_only_the_new_job_id_and_stores_it_like_prisma(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    result = await run_cli(
        cli_env(tmp_path, DATABASE_URL=dsn), "enqueue", "--task", story.task_ids[0]
    )
    assert result.code == 0, result.err
    job_id = result.out.strip()
    assert result.out == job_id + "\n"
    assert CUID.match(job_id), job_id
    row = await job_row(db, job_id)
    assert row["status"] == "QUEUED"
    assert row["runtime"] == "CLAUDE"
    assert row["kind"] == "TASK_IMPLEMENTATION"
    assert (row["product_id"], row["task_id"]) == (world.product_id, story.task_ids[0])
    # No token and no --user: the product owner owns the job, as the UI would do it.
    assert row["user_id"] == world.user_id
    # Prisma fills updated_at in the client; a database default would not exist for it.
    assert abs((row["updated_at"] - row["created_at"]).total_seconds()) < 5


async def test_enqueue_with_a_token_makes_the_tokens_user_the_owner(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    other_user, other_token, _ = await make_user(db)
    env = cli_env(tmp_path, DATABASE_URL=dsn, SCRUM4ME_TOKEN=other_token)
    result = await run_cli(env, "enqueue", "--task", story.task_ids[0])
    assert result.code == 0, result.err
    row = await job_row(db, result.out.strip())
    assert row["user_id"] == other_user != world.user_id


async def test_enqueue_json_describes_the_job_it_stored(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    result = await run_cli(
        cli_env(tmp_path, DATABASE_URL=dsn),
        "enqueue",
        "--product",
        world.product_id,
        "--kind",
        "IDEA_GRILL",
        "--json",
    )
    assert result.code == 0, result.err
    job = json.loads(result.out)
    assert CUID.match(job["job_id"])
    assert {key: job[key] for key in ("user_id", "product_id", "task_id", "kind")} == {
        "user_id": world.user_id,
        "product_id": world.product_id,
        "task_id": None,
        "kind": "IDEA_GRILL",
    }
    created = datetime.fromisoformat(job["created_at"])
    assert abs((datetime.now(UTC) - created).total_seconds()) < 60
    row = await job_row(db, job["job_id"])
    assert (row["kind"], row["status"], row["task_id"]) == ("IDEA_GRILL", "QUEUED", None)


async def test_enqueue_sends_no_notification_beyond_the_triggers_own(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    heard: list[tuple[str, str]] = []
    channels = ["job_enqueued", "job_status_changed", "scrum4me_changes", "worker_connected"]
    session = await ListenSession.open(
        dsn,
        [*channels, "test_fence"],
        lambda channel, payload: heard.append((channel, payload)),
        lambda: None,
        application_name="test-cli-listen",
    )
    try:
        result = await run_cli(
            cli_env(tmp_path, DATABASE_URL=dsn), "enqueue", "--task", story.task_ids[0]
        )
        assert result.code == 0, result.err
        # Notifications arrive in commit order, so once this fence is heard, anything the
        # enqueue's transaction (or a later one of the CLI) sent has arrived before it.
        await db.fetchval(sql("SELECT pg_notify('test_fence', 'after')"))
        await eventually(lambda: ("test_fence", "after") in heard, within=5)
    finally:
        await session.close()
    sent = [(channel, payload) for channel, payload in heard if channel != "test_fence"]
    assert len(sent) == 1, sent
    channel, payload = sent[0]
    assert channel == "job_enqueued"
    assert json.loads(payload)["job_id"] == result.out.strip()


def _bad_enqueues(world: World) -> dict[str, tuple[tuple[str, ...], str]]:
    """Refused enqueue invocations: label -> (arguments, what the refusal must mention)."""
    task = world.stories[0].task_ids[0]
    return {
        "missing task": (("--task", "cmissingtask0000000000000"), "no such task"),
        "missing product": (("--product", "cmissingproduct0000000000"), "no such product"),
        "task and product": (("--task", task, "--product", world.product_id), "exactly one"),
        "neither": ((), "exactly one"),
        "dot-dot id": (("--task=../etc",), "not a valid id"),
        "option-like id": (("--task=-rf",), "not a valid id"),
        "id with a space": (("--task=a b",), "not a valid id"),
        "hostile product": (("--product=../etc",), "not a valid id"),
        "unknown kind": (("--task", task, "--kind", "NOPE"), "invalid choice"),
    }


async def test_every_refused_enqueue_exits_2_says_why_and_leaves_the_queue_untouched(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    await add_story(db, world)
    await enqueue(db, world, world.stories[0].task_ids[0])
    before = await job_count(db)
    env = cli_env(tmp_path, DATABASE_URL=dsn)
    cases = _bad_enqueues(world)
    results = await run_many([(env, ("enqueue", *args)) for args, _ in cases.values()])
    for (label, (_, needle)), result in zip(cases.items(), results, strict=True):
        assert result.out == "", (label, result.out)
        try:
            assert_refused(result, 2, needle)
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from None
    assert await job_count(db) == before


# --- status ----------------------------------------------------------------------------------


async def _two_users_with_jobs(db: Database) -> tuple[World, World, dict[str, str]]:
    """User A: one job in each of QUEUED, CLAIMED, RUNNING, DONE and a live worker; user B:
    one queued job and a worker of its own."""
    mine = await make_world(db)
    story = await add_story(db, mine, tasks=4)
    jobs: dict[str, str] = {}
    for status, task_id in zip(
        ("QUEUED", "CLAIMED", "RUNNING", "DONE"), story.task_ids, strict=True
    ):
        jobs[status] = await enqueue(db, mine, task_id)
        if status != "QUEUED":
            await set_status(db, jobs[status], status)
    await register_worker(db, mine, "worker-of-a")
    theirs = await make_world(db)
    their_story = await add_story(db, theirs)
    jobs["THEIRS"] = await enqueue(db, theirs, their_story.task_ids[0])
    await register_worker(db, theirs, "worker-of-b")
    return mine, theirs, jobs


def _product_name(world: World) -> str:
    return f"Product {world.product_id[-6:].upper()}"


async def test_status_shows_the_queue_live_workers_and_recent_jobs(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    mine, theirs, jobs = await _two_users_with_jobs(db)
    env = cli_env(tmp_path, DATABASE_URL=dsn)
    text, as_json = await run_many([(env, ("status",)), (env, ("status", "--json"))])
    assert text.code == 0, text.err
    out = text.out
    assert out.index("Queue") < out.index("Live workers") < out.index("Recent jobs")
    # queued / claimed / running per product; without a token every user's jobs count.
    assert re.search(rf"^\s+{re.escape(_product_name(mine))}\s+1\s+1\s+1\s", out, re.M), out
    assert re.search(rf"^\s+{re.escape(_product_name(theirs))}\s+1\s+0\s+0\s", out, re.M), out
    assert "worker-of-a" in out
    assert "worker-of-b" in out
    for job_id in jobs.values():
        assert job_id in out

    assert as_json.code == 0, as_json.err
    report = json.loads(as_json.out)
    assert set(report) >= {"queue", "workers", "recent_jobs"}
    queue = {row["product_id"]: row for row in report["queue"]}
    assert {k: queue[mine.product_id][k] for k in ("queued", "claimed", "running")} == {
        "queued": 1,
        "claimed": 1,
        "running": 1,
    }
    assert queue[mine.product_id]["product"] == _product_name(mine)
    statuses = {row["id"]: row["status"] for row in report["recent_jobs"]}
    assert {statuses[jobs[s]] for s in ("QUEUED", "CLAIMED", "RUNNING", "DONE")} == {
        "QUEUED",
        "CLAIMED",
        "RUNNING",
        "DONE",
    }
    assert {w["instance_id"] for w in report["workers"]} == {"worker-of-a", "worker-of-b"}


async def test_status_with_a_token_shows_only_that_users_jobs_and_workers(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    mine, theirs, jobs = await _two_users_with_jobs(db)
    env = cli_env(tmp_path, DATABASE_URL=dsn, SCRUM4ME_TOKEN=mine.token)
    text, as_json = await run_many([(env, ("status",)), (env, ("status", "--json"))])
    assert text.code == 0, text.err
    assert _product_name(mine) in text.out
    assert _product_name(theirs) not in text.out
    assert jobs["THEIRS"] not in text.out
    assert "worker-of-b" not in text.out
    assert as_json.code == 0, as_json.err
    report = json.loads(as_json.out)
    assert [row["product_id"] for row in report["queue"]] == [mine.product_id]
    assert jobs["THEIRS"] not in {row["id"] for row in report["recent_jobs"]}
    assert len(report["recent_jobs"]) == 4
    assert [w["instance_id"] for w in report["workers"]] == ["worker-of-a"]


# --- configuration, token and database errors --------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        pytest.param({"REACTOR_CONCURRENCY": "zero"}, "REACTOR_CONCURRENCY", id="concurrency"),
        pytest.param({"DATABASE_URL": "mysql://x"}, "DATABASE_URL", id="database-url"),
        pytest.param({"REACTOR_KINDS": "NOPE"}, "REACTOR_KINDS", id="kinds"),
        pytest.param({"REACTOR_HEALTH_PORT": "99999"}, "REACTOR_HEALTH_PORT", id="port"),
        pytest.param({"SCRUM4ME_INSTANCE_ID": "-x y"}, "SCRUM4ME_INSTANCE_ID", id="instance"),
    ],
)
def test_a_bad_setting_exits_2_naming_the_variable(
    tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    # An unreachable DATABASE_URL: were settings not checked first, this would exit 3.
    env = cli_env(tmp_path, {"DATABASE_URL": UNREACHABLE}, variables)
    result = reactor_cli(env, "status")
    assert_refused(result, 2, named)


def test_an_unknown_token_exits_4_saying_it_is_invalid_or_revoked(
    tmp_path: Path, shared_dsn: str
) -> None:
    env = cli_env(tmp_path, DATABASE_URL=shared_dsn, SCRUM4ME_TOKEN="not-a-real-token")
    result = reactor_cli(env, "status")
    assert_refused(result, 4, "SCRUM4ME_TOKEN", "invalid or revoked")
    assert result.out == ""


def test_an_unreachable_database_exits_3_fast_and_points_at_database_url(
    tmp_path: Path,
) -> None:
    result = reactor_cli(cli_env(tmp_path, DATABASE_URL=UNREACHABLE), "status", timeout=60)
    assert_refused(result, 3, "cannot reach the database", "Check DATABASE_URL")
    assert result.out == ""
    # Connection refused is immediate; anything near the 60 s limit would be a hang.
    assert result.seconds < 15


# --- run: refusals -----------------------------------------------------------------------------


def test_run_without_a_token_exits_2_and_says_where_to_get_one(
    tmp_path: Path, shared_dsn: str
) -> None:
    # require_token raises ConfigError, which the CLI maps to 2 (usage/configuration).
    result = reactor_cli(cli_env(tmp_path, DATABASE_URL=shared_dsn), "run")
    assert_refused(result, 2, "SCRUM4ME_TOKEN", "/settings/tokens")


def test_run_refuses_a_pooler_direct_url_with_exit_2_before_connecting_to_it(
    tmp_path: Path, shared_dsn: str
) -> None:
    env = cli_env(tmp_path, DATABASE_URL=shared_dsn, DIRECT_URL=POOLER, SCRUM4ME_TOKEN="x")
    result = reactor_cli(env, "run", timeout=60)
    assert_refused(result, 2, "DIRECT_URL", "ep-x.neon.tech")
    # neon.tech is never contacted: the refusal comes before any connection to it.
    assert result.seconds < 8


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port some other process listens on for the duration of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def _run_env(tmp_path: Path, dsn: str, world: World, port: int) -> dict[str, str]:
    return cli_env(
        tmp_path,
        DATABASE_URL=dsn,
        SCRUM4ME_TOKEN=world.token,
        REACTOR_HEALTH_PORT=str(port),
        REACTOR_HTTP_HOST="127.0.0.1",
        REACTOR_LOG_FORMAT="json",
    )


async def worker_rows(db: Database, world: World) -> list[dict[str, Any]]:
    rows = await db.fetch(
        sql("SELECT instance_id, pid FROM claude_workers WHERE token_id = $1"), world.token_id
    )
    return [dict(row) for row in rows]


async def test_run_on_a_taken_port_exits_2_promptly_and_leaves_no_presence(
    db: Database, dsn: str, tmp_path: Path, taken_port: int
) -> None:
    world = await make_world(db)
    result = await run_cli(_run_env(tmp_path, dsn, world, taken_port), "run")
    assert_refused(result, 2, "REACTOR_HEALTH_PORT", str(taken_port))
    assert result.seconds < 15
    assert await worker_rows(db, world) == []


# --- run: the daemon as a process ------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_health(port: int) -> tuple[int, dict[str, Any]] | None:
    """GET /health; None while nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())
    except OSError:
        return None


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (Linux: SigCgt in /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return True  # not Linux: nothing to look at; the small start-up race remains
    for line in status.read_text(encoding="ascii").splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


@dataclass
class DaemonProcess:
    process: trio.Process
    health: dict[str, Any]
    out_path: Path
    err_path: Path

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8")

    async def stop(self, how: signal.Signals = signal.SIGTERM) -> int:
        self.process.send_signal(how)
        with trio.fail_after(10):
            return await self.process.wait()


@asynccontextmanager
async def daemon_process(env: Mapping[str, str], port: int) -> AsyncIterator[DaemonProcess]:
    """``reactor run`` as a child process, yielded once /health answers 200."""
    out_path = Path(env["HOME"]).parent / "run.out"
    err_path = Path(env["HOME"]).parent / "run.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = await trio.lowlevel.open_process(
            [*REACTOR, "run"], env=dict(env), cwd=env["HOME"], stdin=subprocess.DEVNULL,
            stdout=out, stderr=err,
        )  # fmt: skip
    try:
        seen: list[tuple[int, dict[str, Any]]] = []

        async def healthy() -> bool:
            assert process.poll() is None, err_path.read_text(encoding="utf-8")
            answer = await trio.to_thread.run_sync(get_health, port)
            if answer is not None:
                seen.append(answer)
            return answer is not None and answer[0] == 200

        await eventually(healthy, within=20)
        # Signal handling is installed at the very start of run_daemon; still wait until the
        # kernel reports SIGTERM as caught, so a slow interpreter start cannot race the test.
        await eventually(lambda: catches_sigterm(process.pid), within=10)
        yield DaemonProcess(process, seen[-1][1], out_path, err_path)
    finally:
        # A failed assertion must not leave a daemon behind.
        if process.poll() is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await process.wait()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_run_serves_health_registers_presence_and_stops_cleanly_on_a_signal(
    db: Database, dsn: str, tmp_path: Path, stop_signal: signal.Signals
) -> None:
    world = await make_world(db)
    port = free_port()
    async with daemon_process(_run_env(tmp_path, dsn, world, port), port) as daemon:
        body = daemon.health
        assert body["status"] == "idle"
        assert body["tokenStatus"] == {"scrum4me": "ok", "db": "ok"}
        assert body["listener"]["state"] == "healthy"
        assert world.token not in json.dumps(body)

        workers = await worker_rows(db, world)
        assert len(workers) == 1
        assert workers[0]["pid"] == daemon.process.pid
        assert workers[0]["instance_id"] == body["instanceId"]

        assert await daemon.stop(stop_signal) == 0, daemon.stderr()
    assert await worker_rows(db, world) == []
    assert daemon.out_path.read_text(encoding="utf-8") == ""
    events = [json.loads(line) for line in daemon.stderr().splitlines()]
    assert events
    assert all(isinstance(event, dict) and "event" in event for event in events)
    names = [event["event"] for event in events]
    assert "daemon.ready" in names
    stopping = [event for event in events if event["event"] == "daemon.stopping"]
    assert [event["signal"] for event in stopping] == [stop_signal.name]


async def test_a_sigterm_during_start_up_stops_the_daemon_cleanly_without_leaving_presence(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    registered = trio.Event()

    def on_notify(_channel: str, payload: str) -> None:
        message = json.loads(payload)
        if message.get("type") == "claude_worker_heartbeat" and message.get("user_id") == (
            world.user_id
        ):
            registered.set()

    # The presence row is announced in the same commit that writes it: the earliest moment
    # the daemon has something to clean up, and well before it serves /health.
    session = await ListenSession.open(
        dsn, ["scrum4me_changes"], on_notify, lambda: None, application_name="test-cli-early"
    )
    port = free_port()
    env = _run_env(tmp_path, dsn, world, port)
    try:
        with (tmp_path / "run.err").open("wb") as err:
            process = await trio.lowlevel.open_process(
                [*REACTOR, "run"], env=env, cwd=env["HOME"], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        try:
            with trio.fail_after(20):
                await registered.wait()
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                code = await process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await process.wait()
    finally:
        await session.close()
    rows = await worker_rows(db, world)
    # Killed by the signal's default action, the code is -15 and the row stays behind.
    assert (code, rows) == (0, [])


async def test_a_cancelled_jobs_worktree_is_removed_once_its_slow_to_stop_agent_exits(
    db: Database, dsn: str, tmp_path: Path
) -> None:
    world = await make_world(db)
    story = await add_story(db, world)
    setup = await trio.to_thread.run_sync(make_setup, tmp_path / "repo")
    exited = tmp_path / "agent-exited"
    # Like an agent finishing a hook: it needs two seconds to wind down after SIGTERM.
    agent = f"trap 'sleep 2; touch {exited}; exit 0' TERM; sleep 60 & wait"
    port = free_port()
    env = _run_env(tmp_path, dsn, world, port) | {
        "REACTOR_AGENT_COMMAND": agent,
        f"SCRUM4ME_REPO_ROOT_{world.product_id}": str(setup.root),
        "SCRUM4ME_AGENT_WORKTREE_DIR": str(setup.worktrees),
        "REACTOR_CLEANUP_GRACE_SECONDS": "0",
    }
    async with daemon_process(env, port) as daemon:
        job_id = await enqueue(db, world, story.task_ids[0])
        worktree = setup.worktrees / job_id

        async def running() -> bool:
            status = await db.fetchval(
                sql("SELECT status::text FROM claude_jobs WHERE id = $1"), job_id
            )
            return status == "RUNNING" and worktree.is_dir()

        await eventually(running, within=10)
        # Cancelled in the UI: the daemon stops the agent; the story has no active job left.
        await db.execute(
            sql(
                "UPDATE claude_jobs SET status = 'CANCELLED', finished_at = now(), "
                "updated_at = now() WHERE id = $1"
            ),
            job_id,
        )
        await eventually(exited.exists, within=15)
        # The first cleanup found the worktree still in use. Once the agent is gone it must go
        # promptly, not at the catch-up on every tenth periodic sweep (minutes later).
        await eventually(lambda: not worktree.exists(), within=5)
        assert await daemon.stop() == 0, daemon.stderr()
