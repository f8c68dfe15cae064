"""Settings: the one place that reads the environment.

``Settings.from_env()`` turns ``os.environ`` into a frozen object at start-up. Every invalid
value fails there, with a message that names the variable and says how to fix it, so nothing
deep inside a handler ever discovers a typo in production. Variable names shared with
scrum4me-mcp and scrum4me-agent-runner keep their names; reactor-only ones are ``REACTOR_*``.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote_plus, urlsplit

JOB_KINDS = (
    "TASK_IMPLEMENTATION",
    "IDEA_GRILL",
    "IDEA_MAKE_PLAN",
    "IDEA_REVIEW_PLAN",
    "IDEA_MAKE_SPEC",
    "IDEA_REVISE_SPEC",
    "IDEA_CHAT",
    "PLAN_CHAT",
    "SPRINT_IMPLEMENTATION",
    "PR_REVIEW",
    "SPEC_REVIEW",
    "TASK_REVIEW",
    "DEPLOY",
    "DOCS_AUDIT",
)

_REPO_ROOT_PRODUCT = "SCRUM4ME_REPO_ROOT_"
_REPO_ROOT_REPO = "SCRUM4ME_REPO_ROOT_REPO_"
# \A...\Z, not ^...$: "$" also matches before a final newline, and callers use .match().
INSTANCE_ID_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}\Z")

# Query parameters asyncpg 0.32 reads itself (asyncpg/connect_utils.py,
# _parse_connect_dsn_and_args). It sends every other name to the server as a run-time setting,
# and PostgreSQL refuses the connection: "unrecognized configuration parameter".
ASYNCPG_DSN_PARAMETERS = frozenset(
    {
        "host",
        "port",
        "dbname",
        "database",
        "user",
        "password",
        "passfile",
        "service",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslnegotiation",
        "sslcrl",
        "sslpassword",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
    }
)

# Parameters with a meaning the reactor reproduces through asyncpg's own arguments
# (reactor/db.py _connect_kwargs). ``options`` is libpq's, and the server itself reads it from
# the start-up packet, so it is forwarded as it is.
TRANSLATED_DSN_PARAMETERS = frozenset(
    {"schema", "connect_timeout", "pgbouncer", "statement_cache_size", "options"}
)

# Parameters that only mean something to another client of the same URL (Prisma, libpq).
# They are removed before asyncpg sees them, and named in one warning when a pool connects.
DROPPED_DSN_PARAMETERS: Mapping[str, str] = {
    "connection_limit": "Prisma's pool size; the reactor's pool is REACTOR_POOL_SIZE",
    "pool_timeout": "Prisma's wait for a free pooled connection; not used by the reactor",
    "socket_timeout": "Prisma's per-query timeout; the reactor uses its own (60 s)",
    "max_connection_lifetime": "a Prisma pool setting; not used by the reactor",
    "max_idle_connection_lifetime": "a Prisma pool setting; not used by the reactor",
    "sslaccept": "Prisma's certificate policy; here certificate checks follow sslmode",
    "sslidentity": "a Prisma PKCS12 client identity; asyncpg takes PEM sslcert and sslkey",
    "channel_binding": (
        "asyncpg does not implement SCRAM channel binding; TLS still follows sslmode "
        "(sslmode=verify-full authenticates the server)"
    ),
    "application_name": "the reactor names its connections itself (reactor-<role>, ...)",
}

_DSN_CHOICES: Mapping[str, tuple[str, ...]] = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": (
        "any",
        "primary",
        "standby",
        "prefer-standby",
        "read-write",
        "read-only",
    ),
    "sslnegotiation": ("postgres", "direct"),
    "channel_binding": ("disable", "prefer", "require"),
    "pgbouncer": ("true", "false"),
}
_SIMPLE_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_$]*")


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable and the fix."""


@dataclass(frozen=True)
class Settings:
    """Everything the reactor reads from its environment, validated."""

    database_url: str | None = None
    direct_url: str | None = None
    token: str | None = field(default=None, repr=False)
    instance_id: str | None = None
    hostname: str = "localhost"
    home: Path = Path("/nonexistent")
    worktree_dir: Path = Path("/nonexistent/.scrum4me-agent-worktrees")
    agent_config_file: Path = Path("/nonexistent/.scrum4me-agent-config.json")
    repo_roots_by_product: Mapping[str, Path] = field(default_factory=dict)
    repo_roots_by_repo: Mapping[str, Path] = field(default_factory=dict)
    data_dir: Path = Path("/nonexistent/reactor")
    log_dir: Path = Path("/nonexistent/reactor/logs")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    agent_command: str | None = None
    concurrency: int = 1
    kinds: tuple[str, ...] = ("TASK_IMPLEMENTATION",)
    worktrees: bool = True
    sweep_seconds: float = 30.0
    ping_seconds: float = 10.0
    ping_timeout_seconds: float = 5.0
    presence_seconds: float = 10.0
    lease_seconds: int = 300
    max_retries: int = 2
    listener_down_unhealthy_seconds: float = 60.0
    agent_grace_seconds: float = 30.0
    agent_timeout_seconds: float = 4 * 3600.0
    cleanup_grace_seconds: float = 5.0
    git_threads: int = 4
    pool_size: int = 8
    log_level: str = "info"
    log_format: str = "json"
    launched_job_id: str | None = None
    # The environment as read, handed on to agent processes (never logged).
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, overrides: Mapping[str, str] | None = None
    ) -> Settings:
        """Read and validate settings; raises ConfigError naming the variable and the fix.

        ``overrides`` are command-line values given as the variables they stand for.
        """
        env = {**(os.environ if environ is None else environ), **(overrides or {})}
        home = Path(env.get("HOME") or os.path.expanduser("~"))
        data_home = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
        state_home = Path(env.get("XDG_STATE_HOME") or home / ".local" / "state")
        settings = cls(
            database_url=_optional(env, "DATABASE_URL"),
            direct_url=_optional(env, "DIRECT_URL"),
            token=_optional(env, "SCRUM4ME_TOKEN"),
            instance_id=_instance_id(env),
            hostname=env.get("HOSTNAME") or socket.gethostname(),
            home=home,
            worktree_dir=_path(
                env, "SCRUM4ME_AGENT_WORKTREE_DIR", home / ".scrum4me-agent-worktrees"
            ),
            agent_config_file=home / ".scrum4me-agent-config.json",
            repo_roots_by_product=_repo_roots(env, by_repo=False),
            repo_roots_by_repo=_repo_roots(env, by_repo=True),
            data_dir=_path(env, "REACTOR_DATA_DIR", data_home / "reactor"),
            log_dir=_path(env, "REACTOR_LOG_DIR", state_home / "reactor" / "logs"),
            http_host=env.get("REACTOR_HTTP_HOST") or "127.0.0.1",
            http_port=_int(env, "REACTOR_HEALTH_PORT", 8080, low=0, high=65535),
            agent_command=_optional(env, "REACTOR_AGENT_COMMAND"),
            concurrency=_int(env, "REACTOR_CONCURRENCY", 1, low=1, high=256),
            kinds=_kinds(env),
            worktrees=_bool(env, "REACTOR_WORKTREES", True),
            sweep_seconds=_seconds(env, "REACTOR_SWEEP_SECONDS", 30.0, low=1.0),
            ping_seconds=_seconds(env, "REACTOR_PING_SECONDS", 10.0, low=0.5),
            ping_timeout_seconds=_seconds(env, "REACTOR_PING_TIMEOUT_SECONDS", 5.0, low=0.1),
            presence_seconds=_seconds(env, "REACTOR_PRESENCE_SECONDS", 10.0, low=0.5),
            lease_seconds=_int(env, "REACTOR_LEASE_SECONDS", 300, low=1, high=86400),
            max_retries=_int(env, "REACTOR_MAX_RETRIES", 2, low=0, high=100),
            listener_down_unhealthy_seconds=_seconds(
                env, "REACTOR_LISTENER_DOWN_UNHEALTHY_SECONDS", 60.0, low=1.0
            ),
            agent_grace_seconds=_seconds(env, "REACTOR_AGENT_GRACE_SECONDS", 30.0, low=0.0),
            agent_timeout_seconds=_seconds(env, "REACTOR_AGENT_TIMEOUT_SECONDS", 14400.0, low=1.0),
            cleanup_grace_seconds=_seconds(env, "REACTOR_CLEANUP_GRACE_SECONDS", 5.0, low=0.0),
            git_threads=_int(env, "REACTOR_GIT_THREADS", 4, low=1, high=64),
            pool_size=_int(env, "REACTOR_POOL_SIZE", 8, low=2, high=100),
            log_level=_choice(
                env, "REACTOR_LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ),
            log_format=_choice(env, "REACTOR_LOG_FORMAT", "json", ("json", "text")),
            launched_job_id=_optional(env, "SCRUM4ME_JOB_ID"),
            environ=dict(env),
        )
        if settings.ping_timeout_seconds >= settings.ping_seconds:
            raise ConfigError(
                "REACTOR_PING_TIMEOUT_SECONDS must be smaller than REACTOR_PING_SECONDS "
                f"(got {settings.ping_timeout_seconds} >= {settings.ping_seconds}); "
                "lower the timeout or raise the interval."
            )
        if settings.direct_url is not None and settings.database_url is None:
            # Queries would go to the embedded server and LISTEN to another database.
            raise ConfigError(
                "DIRECT_URL is set but DATABASE_URL is not. Set DATABASE_URL to the same "
                "database (its pooled URL is fine), or unset DIRECT_URL to use the embedded "
                "server."
            )
        for name, url in (
            ("DATABASE_URL", settings.database_url),
            ("DIRECT_URL", settings.direct_url),
        ):
            if url is not None:
                _check_dsn(name, url)
        return settings

    @property
    def listen_url(self) -> str | None:
        """The DSN for the dedicated LISTEN connection: DIRECT_URL when set, else DATABASE_URL."""
        return self.direct_url or self.database_url

    def require_listen_url(self) -> str:
        """The LISTEN DSN, refusing a Neon pooler host (LISTEN silently receives nothing there)."""
        url = self.listen_url
        if url is None:
            raise ConfigError("DATABASE_URL is not set; set it (and DIRECT_URL for Neon).")
        host = urlsplit(url).hostname or ""
        source = "DIRECT_URL" if self.direct_url else "DATABASE_URL"
        if "-pooler" in host:
            raise ConfigError(
                f"{source} points at a connection pooler ({host}); LISTEN through a "
                "transaction pooler never receives notifications. Set DIRECT_URL to the "
                "direct (non-pooler) URL: the same host without '-pooler', e.g. "
                f"{host.replace('-pooler', '')}."
            )
        if dsn_parameters(source, url).pgbouncer:
            raise ConfigError(
                f"{source} says pgbouncer=true, so it goes through a transaction pooler, and "
                "LISTEN through a transaction pooler never receives notifications. Set "
                "DIRECT_URL to the direct (non-pooler) URL of the same database, without "
                "pgbouncer=true."
            )
        return url

    def require_token(self) -> str:
        if not self.token:
            raise ConfigError(
                "SCRUM4ME_TOKEN is not set. Create an API token in Scrum4Me "
                "(/settings/tokens) and export SCRUM4ME_TOKEN=<token>."
            )
        return self.token

    def instance_for(self, role: str) -> str:
        """This process's worker instance id: SCRUM4ME_INSTANCE_ID, else a default per role.

        ``reactor mcp`` defaults to ``mcp-<host>-<parent pid>``: Claude Code starts it and may
        restart it in the middle of a job, and every write is fenced on the instance id, so
        the id has to outlive the MCP process and last as long as the client does (its pid).
        Two Claude Code sessions still differ. Anything else is ``<role>-<host>-<pid>``.
        """
        if self.instance_id:
            return self.instance_id
        pid = os.getppid() if role == "mcp" else os.getpid()
        return f"{role}-{self.hostname}-{pid}"

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (CLI flags, tests)."""
        return replace(self, **changes)  # type: ignore[arg-type]


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _path(env: Mapping[str, str], name: str, default: Path) -> Path:
    value = _optional(env, name)
    if value is None:
        return default
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ConfigError(f"{name} must be an absolute path (got {value!r}).")
    return path


def _int(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name} must be a whole number between {low} and {high} (got {raw!r})."
        ) from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high} (got {value}).")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, low: float) -> float:
    raw = _optional(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds (got {raw!r}).") from None
    if not value >= low or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number of seconds >= {low} (got {raw!r}).")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _optional(env, name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("1", "true", "on", "yes"):
        return True
    if lowered in ("0", "false", "off", "no"):
        return False
    raise ConfigError(f"{name} must be on or off (got {raw!r}).")


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = _optional(env, name)
    if raw is None:
        return default
    if raw.lower() not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)} (got {raw!r}).")
    return raw.lower()


def _kinds(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _optional(env, "REACTOR_KINDS")
    if raw is None:
        return ("TASK_IMPLEMENTATION",)
    kinds = tuple(dict.fromkeys(part.strip().upper() for part in raw.split(",") if part.strip()))
    unknown = [kind for kind in kinds if kind not in JOB_KINDS]
    if not kinds or unknown:
        raise ConfigError(
            f"REACTOR_KINDS has unknown job kind(s) {', '.join(unknown) or '(none given)'}; "
            f"use a comma-separated list of: {', '.join(JOB_KINDS)}."
        )
    return kinds


def _instance_id(env: Mapping[str, str]) -> str | None:
    raw = _optional(env, "SCRUM4ME_INSTANCE_ID")
    if raw is not None and INSTANCE_ID_RE.fullmatch(raw) is None:
        raise ConfigError(
            "SCRUM4ME_INSTANCE_ID may only contain letters, digits and . _ : @ - "
            f"(at most 128 characters, starting with a letter or digit); got {raw!r}."
        )
    return raw


def _repo_roots(env: Mapping[str, str], *, by_repo: bool) -> dict[str, Path]:
    roots: dict[str, Path] = {}
    for name, value in env.items():
        if by_repo:
            if not name.startswith(_REPO_ROOT_REPO):
                continue
            key = name[len(_REPO_ROOT_REPO) :]
        else:
            if not name.startswith(_REPO_ROOT_PRODUCT) or name.startswith(_REPO_ROOT_REPO):
                continue
            key = name[len(_REPO_ROOT_PRODUCT) :]
        if not key or not value.strip():
            continue
        path = Path(value.strip()).expanduser()
        if not path.is_absolute():
            raise ConfigError(f"{name} must be an absolute path to a git clone (got {value!r}).")
        roots[key] = path
    return roots


def _check_dsn(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(
            f"{name} must be a postgresql:// URL (got scheme {parts.scheme or 'none'!r}), "
            "e.g. postgresql://user:password@host:5432/dbname."
        )
    dsn_parameters(name, url)


@dataclass(frozen=True)
class DsnParameters:
    """The query string of a database URL, sorted by what the reactor does with each name.

    Errors quote only values that are numbers or choices; a parameter the reactor does not
    know is named without its value, which may be a secret (``password`` is a parameter).
    """

    kept: tuple[str, ...] = ()  # raw ``name=value`` pieces that asyncpg reads itself
    server_settings: Mapping[str, str] = field(default_factory=dict)  # sent at start-up
    connect_timeout: float | None = None
    statement_cache_size: int | None = None
    pgbouncer: bool = False
    dropped: Mapping[str, str] = field(default_factory=dict)  # name -> why it has no effect


def dsn_parameters(name: str, url: str) -> DsnParameters:
    """Sort ``url``'s query parameters; raises ConfigError naming ``name``, the parameter
    and the fix for a malformed piece, a bad value, or a parameter nobody understands."""
    _base, _, rest = url.partition("?")
    query = rest.partition("#")[0]
    pieces: dict[str, str] = {}  # name -> the piece as written, so encoding survives
    values: dict[str, str] = {}
    for piece in query.split("&"):
        if not piece:
            continue  # "a=1&&b=2": asyncpg's strict parser would fail on the empty piece
        key_raw, equals, value_raw = piece.partition("=")
        key = unquote_plus(key_raw)
        if not equals:
            raise ConfigError(
                f"{name} has a query parameter without a value ({key!r}); write it as "
                f"{key}=<value> or remove it."
            )
        # The last occurrence wins, as in asyncpg and libpq.
        pieces[key] = piece
        values[key] = unquote_plus(value_raw)
    unknown = [
        key
        for key in values
        if key not in ASYNCPG_DSN_PARAMETERS
        and key not in TRANSLATED_DSN_PARAMETERS
        and key not in DROPPED_DSN_PARAMETERS
    ]
    if unknown:
        raise ConfigError(
            f"{name} has query parameter(s) {', '.join(unknown)}, which neither asyncpg nor "
            "the reactor understands (PostgreSQL would refuse the connection with "
            f"'unrecognized configuration parameter'). Remove them from {name}; a PostgreSQL "
            "setting goes into options, e.g. options=-c%20statement_timeout%3D5000. Accepted: "
            f"{', '.join(sorted(ASYNCPG_DSN_PARAMETERS | TRANSLATED_DSN_PARAMETERS))}; "
            f"ignored: {', '.join(DROPPED_DSN_PARAMETERS)}."
        )
    for key, allowed in _DSN_CHOICES.items():
        # An empty value means "not given" here, as in asyncpg and libpq.
        if values.get(key) and values[key].lower() not in allowed:
            raise ConfigError(f"{name} has {key}={values[key]!r}; use one of {', '.join(allowed)}.")
    dropped = {key: DROPPED_DSN_PARAMETERS[key] for key in values if key in DROPPED_DSN_PARAMETERS}
    kept = {key: piece for key, piece in pieces.items() if key in ASYNCPG_DSN_PARAMETERS}
    if "sslidentity" in values and kept.pop("sslpassword", None) is not None:
        # With a PKCS12 identity, Prisma's sslpassword unlocks that file, not a PEM key.
        dropped["sslpassword"] = "the password of Prisma's PKCS12 sslidentity"
    if values.get("sslcert") and not values.get("sslkey"):
        # Prisma reads sslcert as the server's CA certificate, libpq and asyncpg as a client
        # certificate that needs a key; a shared URL without sslkey means Prisma's sense. (A
        # client PEM that holds its key too: give sslkey=<the same file>.)
        cert = kept.pop("sslcert")
        if values.get("sslrootcert"):
            dropped["sslcert"] = "Prisma's server certificate; sslrootcert is used instead"
        else:
            kept["sslrootcert"] = "sslrootcert=" + cert.partition("=")[2]
    settings: dict[str, str] = {}
    if values.get("options"):
        settings["options"] = values["options"]
    if values.get("schema"):
        settings["search_path"] = _search_path(name, values["schema"])
    return DsnParameters(
        kept=tuple(kept.values()),
        server_settings=settings,
        connect_timeout=_dsn_connect_timeout(name, values.get("connect_timeout")),
        statement_cache_size=_dsn_whole_number(
            name, "statement_cache_size", values.get("statement_cache_size")
        ),
        pgbouncer=values.get("pgbouncer", "").lower() == "true",
        dropped=dropped,
    )


def _search_path(name: str, schema: str) -> str:
    if "\x00" in schema or len(schema.encode("utf-8")) > 63:
        raise ConfigError(
            f"{name} has schema={schema!r}; use the name of one schema (at most 63 bytes)."
        )
    if _SIMPLE_IDENTIFIER.fullmatch(schema):
        return schema
    # Prisma takes the name literally (mixed case, dashes), so quote it the same way.
    return '"' + schema.replace('"', '""') + '"'


def _dsn_whole_number(name: str, key: str, raw: str | None) -> int | None:
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name} has {key}={raw!r}; use a whole number >= 0.")
    return value


def _dsn_connect_timeout(name: str, raw: str | None) -> float | None:
    seconds = _dsn_whole_number(name, "connect_timeout", raw)
    # 0 means "wait forever" to libpq and Prisma; a daemon that reconnects on its own must not
    # hang in a connect, so 0 keeps asyncpg's default (60 s) instead.
    if not seconds:
        return None
    # libpq waits at least 2 s whatever the URL says; do the same.
    return float(max(seconds, 2))
