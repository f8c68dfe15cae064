"""The environment variables, as ``--help`` explains them.

One table, rendered into the ``environment:`` section of ``reactor --help`` and of each
command's ``--help``, so the help cannot list a variable a command ignores or forget one it
reads. reactor/config.py does the parsing and validation; this module only describes it, and
tests/test_cli.py checks the table against the Configuration table of the README.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from reactor.config import JOB_KINDS

COMMANDS = ("run", "mcp", "migrate", "enqueue", "status", "demo")

# Who reads what. The one-shot commands open the database like the daemon does; the demo
# always uses the embedded server and sets its own token, worktrees, agent and ports, so
# only the data directory and the daemon's timing settings reach it.
_DB = frozenset({"run", "mcp", "migrate", "enqueue", "status"})
_WORKER = frozenset({"run", "mcp"})
_TIMING = frozenset({"run", "mcp", "demo"})
_DAEMON = frozenset({"run"})
_DAEMON_AND_DEMO = frozenset({"run", "demo"})


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str | None  # None: unset unless given
    meaning: str
    commands: frozenset[str]
    flag: str | None = None  # the command-line option that overrides it
    required_by: frozenset[str] = frozenset()
    is_file: bool = False  # a file the reactor reads, listed here because it configures it


ENVIRONMENT: tuple[EnvVar, ...] = (
    EnvVar(
        "DATABASE_URL",
        "embedded server",
        "PostgreSQL for queries (postgresql://...); a pooled (-pooler) URL is fine. Unset: an "
        "embedded PostgreSQL in REACTOR_DATA_DIR is started and reused.",
        _DB,
    ),
    EnvVar(
        "DIRECT_URL",
        "DATABASE_URL",
        "direct (non-pooler) connection used for LISTEN and by migrate. A -pooler host is "
        "refused: through a transaction pooler LISTEN succeeds but never receives anything.",
        _DB,
    ),
    EnvVar(
        "SCRUM4ME_TOKEN",
        None,
        "raw Scrum4Me API token (its sha256 is looked up in api_tokens.token_hash). Required "
        "by run and mcp; enqueue makes its user the job's owner; status shows only its user's "
        "jobs and workers. Demo accounts cannot claim.",
        frozenset({"run", "mcp", "enqueue", "status"}),
        required_by=_WORKER,
    ),
    EnvVar(
        "SCRUM4ME_INSTANCE_ID",
        "reactor-<host>-<pid> / mcp-<host>-<ppid>",
        "worker instance id; every claim and every write is fenced on token + instance. For "
        "mcp it is the parent's pid (the MCP client's), so the id outlives a restart of the "
        "server. Letters, digits and . _ : @ - only, at most 128 characters.",
        _WORKER,
    ),
    EnvVar(
        "SCRUM4ME_JOB_ID",
        None,
        "set by reactor run for the agent it launches, never by hand: a reactor mcp started by "
        "that agent then leaves worker presence to the daemon.",
        frozenset({"mcp"}),
    ),
    EnvVar(
        "SCRUM4ME_AGENT_WORKTREE_DIR",
        "~/.scrum4me-agent-worktrees",
        "where job worktrees go (<dir>/<job id>); an absolute path.",
        _WORKER,
    ),
    EnvVar(
        "SCRUM4ME_REPO_ROOT_<productId>",
        None,
        "local git clone to cut a product's worktrees from (absolute path).",
        _WORKER,
    ),
    EnvVar(
        "SCRUM4ME_REPO_ROOT_REPO_<repoName>",
        None,
        "local git clone of a repository, for tasks with their own repo_url; checked before "
        "the per-product variable.",
        _WORKER,
    ),
    EnvVar(
        "~/.scrum4me-agent-config.json",
        None,
        'a file, not a variable: {"repoRoots": {"<productId or repoName>": "/abs/path"}}, '
        "consulted after the variables above; last comes the convention ~/Projects/<repo name>.",
        _WORKER,
        is_file=True,
    ),
    EnvVar(
        "REACTOR_HEALTH_PORT",
        "8080",
        "HTTP port for /health, /metrics and /mcp (0..65535; 0 picks a free port).",
        _DAEMON,
        flag="--port",
    ),
    EnvVar(
        "REACTOR_HTTP_HOST",
        "127.0.0.1",
        "HTTP bind address (the Docker image sets 0.0.0.0).",
        _DAEMON,
        flag="--host",
    ),
    EnvVar(
        "REACTOR_AGENT_COMMAND",
        None,
        "shell command run for each claimed job, in its worktree. Unset: the daemon launches "
        "nothing and MCP clients do the work.",
        _DAEMON,
        flag="--agent-command",
    ),
    EnvVar(
        "REACTOR_CONCURRENCY",
        "1",
        "agents the daemon runs at once (1..256).",
        _DAEMON,
        flag="--concurrency",
    ),
    EnvVar(
        "REACTOR_KINDS",
        "TASK_IMPLEMENTATION",
        "comma-separated job kinds to claim; other kinds are never touched, so scrum4me-mcp can "
        f"keep serving them. Known kinds: {', '.join(JOB_KINDS)}.",
        _WORKER,
        flag="--kinds",
    ),
    EnvVar(
        "REACTOR_WORKTREES",
        "on",
        "off: claim without making worktrees (for agents that bring their own checkout).",
        _WORKER,
    ),
    EnvVar(
        "REACTOR_SWEEP_SECONDS",
        "30",
        "safety-net sweep (>= 1): rescue expired leases and look for work a lost notification "
        "would have announced.",
        _TIMING,
    ),
    EnvVar(
        "REACTOR_PING_SECONDS",
        "10",
        "listener health round trip (>= 0.5): a self-addressed NOTIFY plus "
        "pg_listening_channels(); also refreshes presence and re-checks the token.",
        _TIMING,
    ),
    EnvVar(
        "REACTOR_PING_TIMEOUT_SECONDS",
        "5",
        "a ping not answered within this (>= 0.1, below REACTOR_PING_SECONDS) means a "
        "half-open connection: reconnect.",
        _TIMING,
    ),
    EnvVar(
        "REACTOR_PRESENCE_SECONDS",
        "10",
        "presence heartbeat of MCP-over-HTTP callers (>= 0.5); the process's own heartbeat "
        "rides on the ping.",
        _DAEMON_AND_DEMO,
    ),
    EnvVar(
        "REACTOR_LEASE_SECONDS",
        "300",
        "lease of a claim (1..86400), renewed by job_heartbeat and by the daemon while its "
        "agent runs.",
        _TIMING,
    ),
    EnvVar(
        "REACTOR_MAX_RETRIES",
        "2",
        "times an expired lease requeues a job (0..100) before it fails.",
        _TIMING,
    ),
    EnvVar(
        "REACTOR_LISTENER_DOWN_UNHEALTHY_SECONDS",
        "60",
        "/health turns 503 when the listener has not been healthy for this long (>= 1).",
        _DAEMON_AND_DEMO,
    ),
    EnvVar(
        "REACTOR_AGENT_GRACE_SECONDS",
        "30",
        "on SIGTERM, how long running agents may finish before they are stopped and their "
        "jobs requeued (>= 0).",
        _DAEMON_AND_DEMO,
    ),
    EnvVar(
        "REACTOR_AGENT_TIMEOUT_SECONDS",
        "14400",
        "hard deadline of one agent run (>= 1; 14400 is 4 hours); then it is stopped and its "
        "job failed.",
        _DAEMON_AND_DEMO,
    ),
    EnvVar(
        "REACTOR_CLEANUP_GRACE_SECONDS",
        "5",
        "delay before a finished story's worktrees are removed (>= 0): an agent's PostToolUse "
        "hook may still run in one.",
        _WORKER,
    ),
    EnvVar(
        "REACTOR_GIT_THREADS",
        "4",
        "git operations run at once (1..64).",
        _TIMING,
    ),
    EnvVar(
        "REACTOR_POOL_SIZE",
        "8",
        "database connection pool size (2..100).",
        frozenset({"run", "mcp", "enqueue", "status"}),
    ),
    EnvVar(
        "REACTOR_DATA_DIR",
        "$XDG_DATA_HOME/reactor",
        "data of the embedded PostgreSQL, used when DATABASE_URL is unset ($XDG_DATA_HOME "
        "defaults to ~/.local/share); an absolute path.",
        frozenset(COMMANDS),
    ),
    EnvVar(
        "REACTOR_LOG_DIR",
        "$XDG_STATE_HOME/reactor/logs",
        "per-job agent output (<job id>.log) and context files ($XDG_STATE_HOME defaults to "
        "~/.local/state); an absolute path.",
        _DAEMON,
    ),
    EnvVar(
        "REACTOR_LOG_LEVEL",
        "info",
        "debug, info, warning or error. run and mcp log at this level; migrate, enqueue and "
        "status log only warnings and errors unless -v is given.",
        _DB,
    ),
    EnvVar(
        "REACTOR_LOG_FORMAT",
        "json",
        "json (one object per line on stderr) or text.",
        _DB,
    ),
)

_INDENT = " " * 6


def variables_for(command: str | None) -> list[EnvVar]:
    """The variables that affect ``command`` (None: all of them), in table order."""
    return [var for var in ENVIRONMENT if command is None or command in var.commands]


def render(command: str | None, width: int) -> str:
    """The ``environment:`` section of one command's help (None: the top-level help).

    Each variable gets a line with its name, default and overriding option, then its
    meaning wrapped to ``width`` columns. The top-level section also says who reads it.
    """
    lines = textwrap.wrap(
        "environment (an invalid value stops the command at start-up with exit code 2):",
        width,
        subsequent_indent="  ",
    )
    for var in variables_for(command):
        if var.default is not None:
            default = f"default: {var.default}"
        elif var.is_file:
            default = "optional file"
        elif command in var.required_by:
            default = "required"
        else:
            default = "no default"
        if var.flag:
            default += f"; {var.flag} overrides it"
        lines.append(f"  {var.name} ({default})")
        meaning = var.meaning
        if command is None:
            meaning += f" Read by: {', '.join(c for c in COMMANDS if c in var.commands)}."
        lines.extend(
            textwrap.wrap(
                meaning,
                width,
                initial_indent=_INDENT,
                subsequent_indent=_INDENT,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)
