"""Apply the reactor's SQL: the standalone app schema (optional) and numbered migrations.

Each migration runs in its own transaction that first takes a cluster-wide advisory lock and
records the migration before running it, so two processes migrating at once both succeed:
the second waits, then sees the row and skips. An applied migration whose file changed since
is refused with a clear error: migrations are forward-only and never edited once released.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from reactor.db import Database, Tx
from reactor.logs import get_logger
from reactor.sqlfiles import Migration, app_schema_sql, load_migrations, query

log = get_logger("reactor.migrate")

APP_TABLES = (
    "users",
    "api_tokens",
    "products",
    "product_members",
    "pbis",
    "stories",
    "tasks",
    "sprints",
    "sprint_runs",
    "claude_jobs",
    "claude_workers",
)

# Every column the reactor reads or writes. Checked at start-up against the real database,
# so an older Scrum4Me schema fails with a list of what is missing instead of a SQL error
# in the middle of a claim.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "username", "is_demo"),
    "api_tokens": ("id", "user_id", "token_hash", "revoked_at", "expires_at"),
    "products": ("id", "user_id", "name", "repo_url", "archived"),
    "product_members": ("product_id", "user_id"),
    "pbis": ("id", "title", "priority", "status"),
    "stories": ("id", "pbi_id", "title", "description", "acceptance_criteria", "status"),
    "tasks": (
        "id", "story_id", "product_id", "title", "description", "implementation_plan",
        "priority", "status", "repo_url", "requires_opus", "updated_at",
    ),
    "sprints": ("id", "sprint_goal", "status"),
    "sprint_runs": ("id", "sprint_id", "status", "started_at", "updated_at"),
    "claude_jobs": (
        "id", "user_id", "product_id", "task_id", "sprint_run_id", "sprint_sequence", "kind",
        "status", "runtime", "claimed_by_token_id", "claimed_at", "worker_instance_id",
        "started_at", "finished_at", "pushed_at", "model_id", "input_tokens", "output_tokens",
        "cache_read_tokens", "cache_write_tokens", "actual_thinking_tokens",
        "requested_model", "requested_thinking_budget", "requested_permission_mode",
        "plan_snapshot", "base_sha", "head_sha", "branch", "pr_url", "summary", "error",
        "verify_result", "retry_count", "lease_until", "created_at", "updated_at",
    ),
    "claude_workers": (
        "id", "user_id", "token_id", "product_id", "runtime", "capabilities", "instance_id",
        "hostname", "pid", "started_at", "last_seen_at",
    ),
}  # fmt: skip

_LOCK = query("migrations.lock")
_SCHEMA = query("migrations.create_schema")
_BOOKKEEPING = query("migrations.create_bookkeeping")
_BOOKKEEPING_EXISTS = query("migrations.bookkeeping_exists")
_APPLIED = query("migrations.applied")
_RECORD = query("migrations.record")
_EXISTING_TABLES = query("migrations.existing_tables")
_MISSING_COLUMNS = query("migrations.missing_columns")
_PRESENT_TRIGGERS = query("migrations.present_triggers")
_TRIGGER_NAME = re.compile(r"CREATE OR REPLACE TRIGGER (\w+)")


class MigrationError(Exception):
    """Migrating cannot proceed; the message says why and what to do."""


@dataclass
class MigrateReport:
    app_schema: str = "not requested"
    applied: list[str] = field(default_factory=list)
    already_applied: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


Progress = Callable[[str], None]


async def migrate(
    db: Database,
    *,
    with_app_schema: bool = False,
    target: int | None = None,
    progress: Progress | None = None,
) -> MigrateReport:
    """Bring the database up to date; idempotent and safe to run concurrently."""
    say = progress or (lambda _message: None)
    report = MigrateReport()
    if with_app_schema:
        report.app_schema = await db.transaction(_ensure_app_schema)
        say(f"app schema: {report.app_schema}")
    else:
        await _require_app_tables(db)
    await db.transaction(_bootstrap)
    for migration in load_migrations():
        if target is not None and migration.version > target:
            break
        label = f"{migration.version:04d}_{migration.name}"
        applied = await db.transaction(_applier(migration))
        (report.applied if applied else report.already_applied).append(label)
        say(f"{label}: {'applied' if applied else 'already applied'}")
        log.info("migrate.step", migration=label, applied=applied)
    if target is None:
        report.repaired = await _reinstall_lost_triggers(db)
        for label in report.repaired:
            say(f"{label}: triggers were missing, reinstalled")
    return report


def expected_triggers(migrations: list[Migration] | None = None) -> dict[str, Migration]:
    """Every trigger the migrations create, and the migration that creates it."""
    found: dict[str, Migration] = {}
    for migration in migrations or load_migrations():
        for name in _TRIGGER_NAME.findall(migration.text):
            found[name] = migration
    return found


async def missing_triggers(db: Database) -> dict[str, Migration]:
    expected = expected_triggers()
    present = {row["name"] for row in await db.fetch(_PRESENT_TRIGGERS, list(expected))}
    return {name: migration for name, migration in expected.items() if name not in present}


async def _reinstall_lost_triggers(db: Database) -> list[str]:
    """Re-run (idempotent) migrations whose triggers vanished, e.g. after an app migration
    dropped and recreated claude_jobs while reactor.migrations still lists them."""
    missing = await missing_triggers(db)
    labels = []
    for migration in sorted(set(missing.values()), key=lambda m: m.version):
        label = f"{migration.version:04d}_{migration.name}"

        async def reapply(tx: Tx, migration: Migration = migration) -> None:
            await tx.execute(_LOCK)
            await tx.execute_script(migration.text)

        await db.transaction(reapply)
        log.warning("migrate.repaired", migration=label, why="its triggers were missing")
        labels.append(label)
    return labels


async def check_schema(db: Database) -> None:
    """Fail with the list of missing tables/columns if this is not a usable Scrum4Me schema."""
    tables = list(REQUIRED_COLUMNS)
    columns = [column for table in tables for column in REQUIRED_COLUMNS[table]]
    owners = [table for table in tables for _column in REQUIRED_COLUMNS[table]]
    missing = await db.fetch(_MISSING_COLUMNS, owners, columns)
    if missing:
        listed = ", ".join(f"{row['table_name']}.{row['column_name']}" for row in missing[:20])
        raise MigrationError(
            f"This database lacks columns the reactor needs: {listed}. Upgrade the Scrum4Me "
            "schema (prisma migrate deploy in the Scrum4Me app), or for a standalone "
            "database run `reactor migrate --with-app-schema` on an empty database."
        )
    applied = {row["version"] for row in await _applied_rows(db)}
    pending = [m for m in load_migrations() if m.version not in applied]
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise MigrationError(f"Reactor migrations not applied: {names}. Run `reactor migrate`.")
    lost = await missing_triggers(db)
    if lost:
        raise MigrationError(
            f"The reactor's triggers {', '.join(sorted(lost))} are missing (a table was "
            "recreated?), so no job would wake the reactor. Run `reactor migrate` to reinstall "
            "them."
        )


async def _applied_rows(db: Database) -> list[dict[str, object]]:
    if not await db.fetchval(_BOOKKEEPING_EXISTS):
        return []
    return [dict(row) for row in await db.fetch(_APPLIED)]


async def _require_app_tables(db: Database) -> None:
    present = {row["name"] for row in await db.fetch(_EXISTING_TABLES, list(APP_TABLES))}
    missing = [table for table in APP_TABLES if table not in present]
    if missing:
        raise MigrationError(
            f"This database has no Scrum4Me tables ({', '.join(missing)} missing). Point "
            "DATABASE_URL at the Scrum4Me database, or create a standalone schema with "
            "`reactor migrate --with-app-schema`."
        )


async def _ensure_app_schema(tx: Tx) -> str:
    await tx.execute(_LOCK)
    present = {row["name"] for row in await tx.fetch(_EXISTING_TABLES, list(APP_TABLES))}
    if len(present) == len(APP_TABLES):
        log.info("migrate.app_schema", outcome="present", why="all Scrum4Me tables exist")
        return "present (left untouched)"
    if present:
        missing = [table for table in APP_TABLES if table not in present]
        raise MigrationError(
            "Refusing to create the Scrum4Me app schema: some of its tables already exist "
            f"({', '.join(sorted(present))}) but not all ({', '.join(missing)} missing). "
            "Use an empty database for standalone mode, or the real Scrum4Me database "
            "without --with-app-schema."
        )
    await tx.execute_script(app_schema_sql())
    log.info("migrate.app_schema", outcome="created", why="no Scrum4Me tables existed")
    return "created"


async def _bootstrap(tx: Tx) -> None:
    await tx.execute(_LOCK)
    await tx.execute(_SCHEMA)
    await tx.execute(_BOOKKEEPING)


def _applier(migration: Migration) -> Callable[[Tx], Awaitable[bool]]:
    async def apply(tx: Tx) -> bool:
        await tx.execute(_LOCK)
        applied = {row["version"]: row for row in await tx.fetch(_APPLIED)}
        existing = applied.get(migration.version)
        if existing is not None:
            if existing["checksum"] != migration.checksum:
                raise MigrationError(
                    f"Migration {migration.version:04d}_{migration.name} was applied on "
                    f"{existing['applied_at']:%Y-%m-%d} but its file has changed since "
                    f"(checksum {existing['checksum'][:12]} in the database, "
                    f"{migration.checksum[:12]} on disk). Migrations are never edited once "
                    "applied: restore the original file and put the change in a new "
                    "migration."
                )
            return False
        await tx.execute(_RECORD, migration.version, migration.name, migration.checksum)
        await tx.execute_script(migration.text)
        return True

    return apply
