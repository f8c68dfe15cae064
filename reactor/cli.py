"""The ``reactor`` command line.

Exit codes: 0 success; 1 unexpected failure; 2 bad usage or configuration; 3 the database is
unreachable or its schema is not ready; 4 the API token is missing, invalid, revoked, expired
or a demo account's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
import trio_asyncio

from handlers import validate
from handlers.auth import AuthError, authenticate
from handlers.errors import HandlerError
from reactor import __version__, logs
from reactor.config import JOB_KINDS, ConfigError, Settings
from reactor.db import DatabaseError, DatabaseUnavailable
from reactor.embedded import EmbeddedError
from reactor.http import HttpBindError
from reactor.ids import new_cuid
from reactor.migrate import MigrationError, migrate

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_DATABASE, EXIT_TOKEN = 0, 1, 2, 3, 4

DESCRIPTION = """\
Event-driven Postgres LISTEN/NOTIFY job reactor for the Scrum4Me agent-job queue.
Without DATABASE_URL every command uses an embedded PostgreSQL in
$XDG_DATA_HOME/reactor (default ~/.local/share/reactor)."""

EPILOG = """\
environment (see README for all): DATABASE_URL, DIRECT_URL (direct, non-pooler URL used for
LISTEN), SCRUM4ME_TOKEN, SCRUM4ME_INSTANCE_ID, SCRUM4ME_AGENT_WORKTREE_DIR,
SCRUM4ME_REPO_ROOT_<productId>, SCRUM4ME_REPO_ROOT_REPO_<repoName>, REACTOR_*.
exit codes: 0 ok, 1 failure, 2 usage/configuration, 3 database, 4 token."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
        logs.configure(_log_level(args, settings), settings.log_format)
        code: int = trio.run(args.handler, args, settings)
        return code
    except BaseException as exc:  # the top-level handler: map to an exit code and a message
        return _exit_for(_leaf(exc))


def _leaf(exc: BaseException) -> BaseException:
    """The error that matters inside trio's exception groups (nurseries wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, trio.Cancelled)]
        if not inner:
            break
        exc = inner[0]
    return exc


_EXIT_CODES: tuple[tuple[tuple[type[BaseException], ...], int], ...] = (
    ((ConfigError, HttpBindError, validate.InvalidInput, HandlerError), EXIT_USAGE),
    ((AuthError,), EXIT_TOKEN),
    ((MigrationError, EmbeddedError), EXIT_DATABASE),
)


def _exit_for(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, DatabaseUnavailable):
        hint = "Check DATABASE_URL (and that the server runs)."
        return _fail(EXIT_DATABASE, f"cannot reach the database: {exc}. {hint}")
    if isinstance(exc, DatabaseError):
        return _fail(EXIT_DATABASE, f"database error: {exc}")
    for types, code in _EXIT_CODES:
        if isinstance(exc, types):
            return _fail(code, str(exc))
    raise exc  # a bug: let the traceback show (exit status 1)


def _fail(code: int, message: str) -> int:
    print(f"reactor: error: {message}", file=sys.stderr)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reactor",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reactor {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log at info level for one-shot commands"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="the daemon: listener, handlers, presence, HTTP (/health, /metrics, /mcp)",
        description="Run the reactor daemon: claims jobs the moment they are enqueued, serves "
        "GET /health, GET /metrics and MCP over streamable HTTP at /mcp on one port.",
    )
    run.add_argument(
        "--agent-command",
        metavar="CMD",
        help="shell command run per claimed job, in its worktree (env REACTOR_AGENT_COMMAND)",
    )
    run.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="jobs run at once by --agent-command (env REACTOR_CONCURRENCY, default 1)",
    )
    run.add_argument("--port", type=int, help="HTTP port (env REACTOR_HEALTH_PORT, default 8080)")
    run.add_argument("--host", help="HTTP bind address (env REACTOR_HTTP_HOST, default 127.0.0.1)")
    run.add_argument(
        "--kinds",
        help="comma-separated job kinds to claim (env REACTOR_KINDS, default TASK_IMPLEMENTATION)",
    )
    run.set_defaults(handler=_run)

    mcp = commands.add_parser(
        "mcp",
        help="the MCP server on stdio, for Claude Code's --mcp-config",
        description="Serve the Scrum4Me MCP tools (wait_for_job, update_job_status, job_heartbeat, "
        "cleanup_my_worktrees, check_queue_empty) on stdio. Uses SCRUM4ME_TOKEN. Stdout carries "
        "only MCP messages; logs go to stderr.",
    )
    mcp.add_argument("--kinds", help="comma-separated job kinds to claim (env REACTOR_KINDS)")
    mcp.set_defaults(handler=_mcp)

    mig = commands.add_parser(
        "migrate",
        help="install the reactor's triggers and functions (idempotent)",
        description="Install the reactor's SQL (notify triggers, functions, bookkeeping). Safe to "
        "run again and from several processes at once. Never alters the Scrum4Me tables.",
    )
    mig.add_argument(
        "--with-app-schema",
        action="store_true",
        help="also create the Scrum4Me tables when none exist (standalone mode); "
        "a real Scrum4Me database is left untouched",
    )
    mig.set_defaults(handler=_migrate)

    enq = commands.add_parser(
        "enqueue",
        help="insert a job the way the Scrum4Me UI does",
        description="Insert a QUEUED claude_jobs row like the Scrum4Me UI (Prisma-style: "
        "client-side id and updated_at, no NOTIFY sent by hand; the database trigger wakes "
        "reactors).",
    )
    enq.add_argument(
        "--task", metavar="TASK_ID", help="the task to implement (its product is used)"
    )
    enq.add_argument("--product", metavar="PRODUCT_ID", help="the product, for jobs without a task")
    enq.add_argument(
        "--kind",
        default="TASK_IMPLEMENTATION",
        choices=JOB_KINDS,
        metavar="KIND",
        help="job kind (default TASK_IMPLEMENTATION)",
    )
    enq.add_argument("--sprint-run", metavar="RUN_ID", help="attach the job to a sprint run")
    enq.add_argument("--sequence", type=int, help="sprint_sequence within the run")
    enq.add_argument(
        "--user",
        metavar="USER_ID",
        help="owner of the job (default: SCRUM4ME_TOKEN's user, else the product owner)",
    )
    enq.add_argument("--json", action="store_true", help="print the new job as JSON")
    enq.set_defaults(handler=_enqueue)

    status = commands.add_parser(
        "status",
        help="queue depth, live workers, recent jobs",
        description="Show the queue per product, live workers and recent jobs with durations. "
        "Scoped to SCRUM4ME_TOKEN's user when it is set, else all users.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=10, help="recent jobs to show (default 10)")
    status.set_defaults(handler=_status)

    demo = commands.add_parser(
        "demo",
        help="the whole flow on the embedded default, narrated",
        description="Create a demo user, product, sprint run, stories and tasks plus a git repo "
        "with a bare origin; start the daemon with a built-in demo agent; enqueue like the UI; "
        "narrate what happens; print a summary. Uses its own database (reactor_demo) on the "
        "embedded server.",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's git repositories and logs (printed at the end)",
    )
    demo.set_defaults(handler=_demo)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        "REACTOR_AGENT_COMMAND": getattr(args, "agent_command", None),
        "REACTOR_CONCURRENCY": getattr(args, "concurrency", None),
        "REACTOR_HEALTH_PORT": getattr(args, "port", None),
        "REACTOR_HTTP_HOST": getattr(args, "host", None),
        "REACTOR_KINDS": getattr(args, "kinds", None),
    }
    return Settings.from_env(
        overrides={name: str(value) for name, value in flags.items() if value is not None}
    )


def _log_level(args: argparse.Namespace, settings: Settings) -> str:
    if args.command in ("run", "mcp") or args.verbose:
        return settings.log_level
    return "warning"


async def _run(_args: argparse.Namespace, settings: Settings) -> int:
    from reactor.app import run_daemon

    await run_daemon(settings)
    return EXIT_OK


async def _mcp(_args: argparse.Namespace, settings: Settings) -> int:
    from reactor.app import run_mcp_stdio

    await run_mcp_stdio(settings, launched_for_job=settings.launched_job_id)
    return EXIT_OK


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def body(settings: Settings, db: Any) -> int:
        report = await migrate(db, with_app_schema=args.with_app_schema, progress=print)
        applied = len(report.applied)
        print(
            f"migrate: {applied} applied, {len(report.already_applied)} already applied; "
            f"app schema {report.app_schema}"
        )
        return EXIT_OK

    return await _with_database(settings, body, check=False)


async def _enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from reactor.sqlfiles import query

    async def body(settings: Settings, db: Any) -> int:
        if bool(args.task) == bool(args.product):
            raise ConfigError("give exactly one of --task TASK_ID or --product PRODUCT_ID")
        task_id = validate.job_id(args.task) if args.task else None
        if task_id:
            task = await db.fetchrow(query("seed.task_for_enqueue"), task_id)
            if task is None:
                raise ConfigError(f"--task {task_id}: no such task")
            product_id, owner = task["product_id"], task["owner_id"]
        else:
            product = await db.fetchrow(
                query("seed.product_exists"), validate.product_id(args.product)
            )
            if product is None:
                raise ConfigError(f"--product {args.product}: no such product")
            product_id, owner = product["id"], product["user_id"]
        user_id = args.user or (await _token_user(db, settings)) or owner
        job_id = new_cuid()
        row = await db.fetchrow(
            query("seed.enqueue_job"),
            job_id,
            validate.job_id(user_id),
            product_id,
            task_id,
            validate.job_id(args.sprint_run) if args.sprint_run else None,
            args.kind,
            args.sequence,
        )
        job = {
            "job_id": job_id,
            "user_id": user_id,
            "product_id": product_id,
            "task_id": task_id,
            "kind": args.kind,
            "created_at": f"{row['created_at'].isoformat()}Z",
        }
        print(json.dumps(job, indent=2) if args.json else job_id)
        return EXIT_OK

    return await _with_database(settings, body)


async def _token_user(db: Any, settings: Settings) -> str | None:
    if not settings.token:
        return None
    return (await authenticate(db, settings.token, "cli", source="SCRUM4ME_TOKEN")).user_id


async def _status(args: argparse.Namespace, settings: Settings) -> int:
    from reactor.status import collect, render

    async def body(settings: Settings, db: Any) -> int:
        report = await collect(db, await _token_user(db, settings), max(1, min(args.limit, 200)))
        print(json.dumps(report, indent=2, default=str) if args.json else render(report))
        return EXIT_OK

    return await _with_database(settings, body)


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from reactor.demo import run_demo

    return await run_demo(settings, keep=args.keep)


async def _with_database(
    settings: Settings, body: Callable[[Settings, Any], Awaitable[int]], *, check: bool = True
) -> int:
    """Open the configured (or embedded) database for a one-shot command."""
    from reactor.app import open_database, start_embedded
    from reactor.db import Database

    async with trio_asyncio.open_loop():
        if check:
            opened = await open_database(settings, role="cli")
            settings, db = opened.settings, opened.db
        else:
            if settings.database_url is None:
                settings = await start_embedded(settings)
            assert settings.database_url is not None
            db = await Database.connect(
                settings.direct_url or settings.database_url,
                max_size=2,
                application_name="reactor-cli",
            )
        try:
            return await body(settings, db)
        finally:
            await db.close()


if __name__ == "__main__":
    sys.exit(main())
