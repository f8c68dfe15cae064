"""The ``reactor`` command line.

Exit codes: 0 success; 1 unexpected failure; 2 bad usage or configuration; 3 the database is
unreachable or its schema is not ready; 4 the API token is missing, invalid, revoked, expired
or a demo account's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import trio

from handlers import validate
from handlers.auth import AuthError, authenticate
from handlers.errors import HandlerError
from reactor import __version__, aioloop, envdoc, logs
from reactor.config import JOB_KINDS, ConfigError, Settings
from reactor.db import DatabaseError, DatabaseUnavailable
from reactor.embedded import EmbeddedError
from reactor.http import HttpBindError
from reactor.ids import new_cuid
from reactor.migrate import MigrateReport, MigrationError, migrate

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_DATABASE, EXIT_TOKEN = 0, 1, 2, 3, 4

DESCRIPTION = (
    "Event-driven Postgres LISTEN/NOTIFY job reactor for the Scrum4Me agent-job queue. Without "
    "DATABASE_URL every command except demo uses an embedded PostgreSQL in REACTOR_DATA_DIR "
    "(default $XDG_DATA_HOME/reactor, i.e. ~/.local/share/reactor); demo always does.",
)

EXIT_CODES = "exit codes: 0 ok, 1 failure, 2 usage/configuration, 3 database, 4 token."

VERBOSE_HELP = (
    "migrate, enqueue and status: log at REACTOR_LOG_LEVEL (default info) instead of only "
    "warnings and errors (run and mcp always log at REACTOR_LOG_LEVEL)"
)


def _help_width() -> int:
    """Help wraps to the terminal like argparse's own, but never wider than 100 columns."""
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 100))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Options wrapped by argparse; description and epilog arrive wrapped (see _wrapped)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=_help_width())


def _wrapped(*paragraphs: str) -> str:
    """Paragraphs wrapped to the help width (argparse subtracts 2 for its margin)."""
    width = _help_width() - 2
    return "\n\n".join(textwrap.fill(text, width, break_on_hyphens=False) for text in paragraphs)


def _epilog(command: str | None) -> str:
    return f"{envdoc.render(command, _help_width() - 2)}\n\n{_wrapped(EXIT_CODES)}"


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
        description=_wrapped(*DESCRIPTION),
        epilog=_epilog(None),
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reactor {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, *description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=_wrapped(*description),
            epilog=_epilog(name),
            formatter_class=_HelpFormatter,
        )

    def verbose(sub: argparse.ArgumentParser) -> None:
        # SUPPRESS: `reactor -v status` keeps working; `reactor status -v` now does too.
        sub.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
        )

    kinds_help = (
        "comma-separated job kinds to claim (env REACTOR_KINDS, default TASK_IMPLEMENTATION; "
        "the known kinds are listed under REACTOR_KINDS below)"
    )
    database = (
        "Queries go to DATABASE_URL and the LISTEN session to DIRECT_URL (default: "
        "DATABASE_URL). Without DATABASE_URL an embedded PostgreSQL in REACTOR_DATA_DIR is "
        "started, migrated (with the app schema) and reused."
    )

    run = command(
        "run",
        "the daemon: listener, handlers, presence, HTTP (/health, /metrics, /mcp)",
        "Run the reactor daemon: it claims jobs the moment they are enqueued (LISTEN/NOTIFY, "
        "with a safety-net sweep) and serves GET /health, GET /metrics and MCP over streamable "
        "HTTP at /mcp on one port. SIGTERM or SIGINT stops it in order.",
        "SCRUM4ME_TOKEN is required (exit 2 when it is unset, 4 when it is invalid, revoked, "
        f"expired or a demo account's). {database}",
        "Each option overrides the environment variable it names.",
    )
    run.add_argument(
        "--agent-command",
        metavar="CMD",
        help="shell command (/bin/sh -c) run in the worktree of each claimed job, with "
        "SCRUM4ME_JOB_ID, SCRUM4ME_JOB_CONTEXT (a JSON file with the job), SCRUM4ME_WORKTREE "
        "and SCRUM4ME_INSTANCE_ID set; exit 0 means done (env REACTOR_AGENT_COMMAND, default "
        "none: MCP clients do the work)",
    )
    run.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="agents --agent-command runs at once, 1..256 (env REACTOR_CONCURRENCY, default 1)",
    )
    run.add_argument(
        "--port",
        type=int,
        help="HTTP port for /health, /metrics and /mcp; 0 picks a free one (env "
        "REACTOR_HEALTH_PORT, default 8080)",
    )
    run.add_argument("--host", help="HTTP bind address (env REACTOR_HTTP_HOST, default 127.0.0.1)")
    run.add_argument("--kinds", help=kinds_help)
    run.set_defaults(handler=_run)

    mcp = command(
        "mcp",
        "the MCP server on stdio, for Claude Code's --mcp-config",
        "Serve the Scrum4Me MCP tools (wait_for_job, update_job_status, job_heartbeat, "
        "cleanup_my_worktrees, check_queue_empty) on stdio: a drop-in for scrum4me-mcp. Stdout "
        "carries only MCP messages; logs go to stderr. Exits on stdin EOF, SIGTERM or SIGINT "
        "and removes its presence row.",
        f"SCRUM4ME_TOKEN is required (exit 2 when unset, 4 when invalid). {database}",
    )
    mcp.add_argument("--kinds", help=kinds_help)
    mcp.set_defaults(handler=_mcp)

    mig = command(
        "migrate",
        "install the reactor's triggers and functions (idempotent)",
        "Install the reactor's SQL: notify triggers, their functions and the reactor.migrations "
        "bookkeeping table; triggers that went missing are reinstalled. Safe to run again and "
        "from several processes at once. Never alters the Scrum4Me tables, columns or indexes.",
        "Connects to DIRECT_URL when it is set, else DATABASE_URL, and prints which (with any "
        "password masked). Without DATABASE_URL it migrates the embedded PostgreSQL in "
        "REACTOR_DATA_DIR, whose database always gets the app schema.",
    )
    mig.add_argument(
        "--with-app-schema",
        action="store_true",
        help="also create the eleven Scrum4Me tables when none of them exist (standalone "
        "use); a database that has them all is left untouched, one with only some is refused "
        "(default: off; always on for the embedded server)",
    )
    verbose(mig)
    mig.set_defaults(handler=_migrate)

    enq = command(
        "enqueue",
        "insert a job the way the Scrum4Me UI does",
        "Insert a QUEUED claude_jobs row like the Scrum4Me UI (Prisma-style: client-side cuid "
        "and updated_at, no NOTIFY sent by hand; the database trigger wakes the reactors) and "
        "print its id. Give exactly one of --task and --product.",
        "Uses DATABASE_URL, else the embedded PostgreSQL in REACTOR_DATA_DIR.",
    )
    enq.add_argument(
        "--task",
        metavar="TASK_ID",
        help="the task to implement; the job goes to its product (this or --product is required)",
    )
    enq.add_argument(
        "--product",
        metavar="PRODUCT_ID",
        help="the product, for jobs without a task (this or --task is required)",
    )
    enq.add_argument(
        "--kind",
        default="TASK_IMPLEMENTATION",
        choices=JOB_KINDS,
        metavar="KIND",
        help=f"job kind, one of {', '.join(JOB_KINDS)} (default TASK_IMPLEMENTATION)",
    )
    enq.add_argument(
        "--sprint-run", metavar="RUN_ID", help="attach the job to this sprint run (default: none)"
    )
    enq.add_argument(
        "--sequence", type=int, help="the job's sprint_sequence within the run (default: none)"
    )
    enq.add_argument(
        "--user",
        metavar="USER_ID",
        help="owner of the job (default: SCRUM4ME_TOKEN's user, else the product's owner)",
    )
    enq.add_argument(
        "--json", action="store_true", help="print the new job as JSON instead of only its id"
    )
    verbose(enq)
    enq.set_defaults(handler=_enqueue)

    status = command(
        "status",
        "queue depth, live workers, recent jobs",
        "Show the queue per product (queued, claimed, running), the workers seen in the last "
        "30 s and recent jobs with durations. Scoped to SCRUM4ME_TOKEN's user when it is set, "
        "else all users.",
        "Uses DATABASE_URL, else the embedded PostgreSQL in REACTOR_DATA_DIR.",
    )
    status.add_argument(
        "--json", action="store_true", help="machine-readable output (queue, workers, recent_jobs)"
    )
    status.add_argument(
        "--limit", type=int, default=10, help="recent jobs to show, 1..200 (default 10)"
    )
    verbose(status)
    status.set_defaults(handler=_status)

    demo = command(
        "demo",
        "the whole flow on the embedded default, narrated",
        "Create a demo user, product, sprint run, stories and tasks plus a git repo with a bare "
        "origin; start the daemon with a built-in demo agent; enqueue like the UI; narrate what "
        "happens; print a summary. Exits 0 when every job was done, pushed and cleaned up.",
        "Always uses its own database (reactor_demo, rebuilt on every run) on the embedded "
        "server in REACTOR_DATA_DIR, and sets its own token, instance, worktrees, repo roots, "
        "agent, concurrency, kinds, HTTP port and logs: DATABASE_URL, DIRECT_URL and the "
        "SCRUM4ME_* variables do not apply.",
    )
    demo.add_argument(
        "--keep",
        action="store_true",
        help="keep the demo's git repositories and logs and print where they are (default: "
        "removed at the end)",
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
    # Without DATABASE_URL, starting the embedded server already migrates its database (with
    # the app schema): its report is part of what this command did.
    embedded_runs: list[MigrateReport] = []

    async def body(settings: Settings, db: Any) -> int:
        for line in _target(settings, embedded=bool(embedded_runs)):
            print(line)
        report = await migrate(db, with_app_schema=args.with_app_schema)
        for earlier in embedded_runs:
            report = _combined(earlier, report)
        for line in _report_lines(report):
            print(line)
        return EXIT_OK

    return await _with_database(settings, body, check=False, on_embedded=embedded_runs.append)


def _target(settings: Settings, *, embedded: bool) -> list[str]:
    """Which database migrate works on and why, with any password masked."""
    if embedded:
        assert settings.database_url is not None
        return [
            f"migrate: using the embedded PostgreSQL in {settings.data_dir} (DATABASE_URL is "
            "not set); its database always gets the app schema",
            f"migrate: database {masked_dsn(settings.database_url)}",
        ]
    source = "DIRECT_URL" if settings.direct_url else "DATABASE_URL"
    dsn = settings.direct_url or settings.database_url
    assert dsn is not None
    return [f"migrate: database {masked_dsn(dsn)} (from {source})"]


def masked_dsn(dsn: str) -> str:
    """``dsn`` with its password, in the user info or the query string, replaced by ***."""
    base, mark, rest = dsn.partition("?")
    parts = urlsplit(base)
    if parts.password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        base = urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))
    query, hash_mark, fragment = rest.partition("#")
    pieces = []
    for piece in query.split("&"):
        key, equals, _value = piece.partition("=")
        secret = unquote_plus(key).lower() in ("password", "sslpassword")
        pieces.append(f"{key}=***" if equals and secret else piece)
    return f"{base}{mark}{'&'.join(pieces)}{hash_mark}{fragment}"


def _combined(first: MigrateReport, then: MigrateReport) -> MigrateReport:
    """One report for two runs over the same database: what either of them did."""
    applied = [*first.applied, *(label for label in then.applied if label not in first.applied)]
    app_schema = then.app_schema
    if first.app_schema == "created" or then.app_schema == "not requested":
        app_schema = first.app_schema
    return MigrateReport(
        app_schema=app_schema,
        applied=applied,
        already_applied=[label for label in then.already_applied if label not in applied],
        repaired=[
            *first.repaired,
            *(label for label in then.repaired if label not in first.repaired),
        ],
    )


def _report_lines(report: MigrateReport) -> list[str]:
    lines = []
    if report.app_schema != "not requested":
        lines.append(f"app schema: {report.app_schema}")
    steps = [(label, "applied") for label in report.applied]
    steps += [(label, "already applied") for label in report.already_applied]
    lines.extend(f"{label}: {outcome}" for label, outcome in sorted(steps))
    lines.extend(f"{label}: triggers were missing, reinstalled" for label in report.repaired)
    repaired = f", {len(report.repaired)} repaired" if report.repaired else ""
    lines.append(
        f"migrate: {len(report.applied)} applied, {len(report.already_applied)} already "
        f"applied{repaired}; app schema {report.app_schema}"
    )
    return lines


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
    settings: Settings,
    body: Callable[[Settings, Any], Awaitable[int]],
    *,
    check: bool = True,
    on_embedded: Callable[[MigrateReport], None] | None = None,
) -> int:
    """Open the configured (or embedded) database for a one-shot command.

    ``check=False`` (migrate) skips the schema check and connects to DIRECT_URL when it is
    set; ``on_embedded`` then receives the report of the embedded start-up's own migration.
    """
    from reactor.app import open_database, start_embedded
    from reactor.db import Database

    async with aioloop.open_loop():
        if check:
            opened = await open_database(settings, role="cli")
            settings, db = opened.settings, opened.db
        else:
            if settings.database_url is None:  # (Settings refuses DIRECT_URL alone)
                settings = await start_embedded(settings, on_migrated=on_embedded)
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
