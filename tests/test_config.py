"""Settings: every invalid value fails at start-up naming the variable and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reactor.config import INSTANCE_ID_RE, ConfigError, Settings, dsn_parameters

BASE = {"HOME": "/home/agent"}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def test_defaults_match_the_agent_runner_conventions() -> None:
    s = settings()
    assert s.worktree_dir == Path("/home/agent/.scrum4me-agent-worktrees")
    assert s.agent_config_file == Path("/home/agent/.scrum4me-agent-config.json")
    assert s.data_dir == Path("/home/agent/.local/share/reactor")
    assert (s.http_port, s.concurrency, s.kinds) == (8080, 1, ("TASK_IMPLEMENTATION",))
    assert (s.sweep_seconds, s.ping_seconds, s.ping_timeout_seconds) == (30.0, 10.0, 5.0)
    assert s.database_url is None


def test_listen_uses_direct_url_when_set() -> None:
    s = settings(DATABASE_URL="postgresql://u@pool-host/db", DIRECT_URL="postgresql://u@direct/db")
    assert s.require_listen_url() == "postgresql://u@direct/db"
    assert (
        settings(DATABASE_URL="postgresql://u@h/db").require_listen_url() == "postgresql://u@h/db"
    )


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        (
            {"DATABASE_URL": "postgresql://u:p@ep-cool-123-pooler.eu.aws.neon.tech/db"},
            "DATABASE_URL",
        ),
        (
            {
                "DATABASE_URL": "postgresql://u:p@ep-cool-123-pooler.eu.aws.neon.tech/db",
                "DIRECT_URL": "postgresql://u:p@ep-cool-123-pooler.eu.aws.neon.tech/db",
            },
            "DIRECT_URL",
        ),
    ],
)
def test_listen_through_a_neon_pooler_is_refused_with_the_fix(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**env).require_listen_url()
    message = str(caught.value)
    assert variable in message
    assert "DIRECT_URL" in message
    assert "ep-cool-123.eu.aws.neon.tech" in message
    assert "p@" not in message  # the password never appears in an error


def test_pooled_database_url_is_fine_for_queries_when_direct_url_is_set() -> None:
    s = settings(
        DATABASE_URL="postgresql://u@ep-x-pooler.neon.tech/db",
        DIRECT_URL="postgresql://u@ep-x.neon.tech/db",
    )
    assert s.require_listen_url() == "postgresql://u@ep-x.neon.tech/db"


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("REACTOR_HEALTH_PORT", "http", "whole number"),
        ("REACTOR_HEALTH_PORT", "70000", "between 0 and 65535"),
        ("REACTOR_CONCURRENCY", "0", "between 1 and 256"),
        ("REACTOR_SWEEP_SECONDS", "soon", "number of seconds"),
        ("REACTOR_SWEEP_SECONDS", "0.1", ">= 1.0"),
        ("REACTOR_SWEEP_SECONDS", "nan", "finite"),
        ("REACTOR_KINDS", "TASK_IMPLEMENTATION,NAPPING", "NAPPING"),
        ("REACTOR_WORKTREES", "maybe", "on or off"),
        ("REACTOR_LOG_FORMAT", "xml", "json, text"),
        ("SCRUM4ME_AGENT_WORKTREE_DIR", "relative/dir", "absolute path"),
        ("SCRUM4ME_REPO_ROOT_cabc123", "clones/app", "absolute path"),
        ("SCRUM4ME_INSTANCE_ID", "../../etc", "may only contain"),
        ("DATABASE_URL", "mysql://u@h/db", "postgresql://"),
        ("REACTOR_PING_TIMEOUT_SECONDS", "20", "smaller than REACTOR_PING_SECONDS"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{variable: value})
    assert variable in str(caught.value)
    assert fragment in str(caught.value)


def test_repo_roots_are_read_per_product_and_per_repo() -> None:
    s = settings(
        SCRUM4ME_REPO_ROOT_cprod1="/srv/app",
        SCRUM4ME_REPO_ROOT_REPO_my_app="/srv/my-app",
        SCRUM4ME_REPO_ROOT_REPO_other="~/clones/other",
    )
    assert s.repo_roots_by_product == {"cprod1": Path("/srv/app")}
    assert s.repo_roots_by_repo["my_app"] == Path("/srv/my-app")
    assert s.repo_roots_by_repo["other"].is_absolute()


def test_kinds_are_normalised_and_deduplicated() -> None:
    assert settings(REACTOR_KINDS=" task_implementation, PLAN_CHAT,plan_chat").kinds == (
        "TASK_IMPLEMENTATION",
        "PLAN_CHAT",
    )


def test_missing_token_error_says_where_to_get_one() -> None:
    with pytest.raises(ConfigError, match="/settings/tokens"):
        settings().require_token()


def test_the_token_never_appears_in_the_repr() -> None:
    assert "s3cret" not in repr(settings(SCRUM4ME_TOKEN="s3cret"))


def test_instance_id_pattern_refuses_a_trailing_newline() -> None:
    # reactor/tokens.py checks the X-Scrum4Me-Instance-Id header with .match().
    assert INSTANCE_ID_RE.match("nas-reactor-1")
    assert INSTANCE_ID_RE.match("nas-reactor-1\n") is None
    assert INSTANCE_ID_RE.fullmatch("nas-reactor-1\n") is None


def test_mcp_default_instance_outlives_the_mcp_process() -> None:
    s = settings(HOSTNAME="nas")
    # Claude Code (the parent) keeps its pid when it restarts its MCP server mid-job.
    assert s.instance_for("mcp") == f"mcp-nas-{os.getppid()}"
    assert s.instance_for("reactor") == f"reactor-nas-{os.getpid()}"
    pinned = settings(HOSTNAME="nas", SCRUM4ME_INSTANCE_ID="agent-7")
    assert (pinned.instance_for("mcp"), pinned.instance_for("reactor")) == ("agent-7", "agent-7")


NEON = "postgresql://u:s3cret@ep-cool-123.eu.aws.neon.tech/db"
NEON_POOLED = "postgresql://u:s3cret@ep-cool-123-pooler.eu.aws.neon.tech/db"


@pytest.mark.parametrize(
    "query",
    [
        "sslmode=require&channel_binding=require",  # Neon's own connection string
        "pgbouncer=true&connection_limit=1&pool_timeout=20&schema=app&connect_timeout=10",
        "statement_cache_size=0&socket_timeout=5&sslaccept=strict&application_name=web",
        "options=-c%20statement_timeout%3D5000&target_session_attrs=read-write",
        "sslmode=verify-full&sslrootcert=/etc/ssl/neon.pem&sslnegotiation=direct",
        "sslmode=&&schema=",  # empty values and pieces mean "not given"
    ],
)
def test_urls_shared_with_prisma_and_libpq_are_accepted(query: str) -> None:
    s = settings(DATABASE_URL=f"{NEON_POOLED}?{query}", DIRECT_URL=f"{NEON}?sslmode=require")
    assert s.database_url == f"{NEON_POOLED}?{query}"


def test_parameters_are_sorted_into_kept_translated_and_dropped() -> None:
    params = dsn_parameters(
        "DATABASE_URL",
        "postgresql://u@h/db?sslmode=require&pgbouncer=true&connection_limit=1&schema=My-App"
        "&connect_timeout=1&channel_binding=require&options=-c%20work_mem%3D8MB&sslmode=disable",
    )
    assert params.kept == ("sslmode=disable",)  # the last occurrence wins, as in asyncpg
    assert params.pgbouncer
    assert params.connect_timeout == 2.0  # libpq's floor
    assert params.server_settings == {"options": "-c work_mem=8MB", "search_path": '"My-App"'}
    assert sorted(params.dropped) == ["channel_binding", "connection_limit"]
    assert "REACTOR_POOL_SIZE" in params.dropped["connection_limit"]


def test_prisma_sslcert_without_a_key_is_the_server_certificate() -> None:
    prisma = dsn_parameters("DATABASE_URL", "postgresql://u@h/db?sslcert=/ca.pem&sslmode=require")
    assert prisma.kept == ("sslmode=require", "sslrootcert=/ca.pem")
    client = dsn_parameters("DATABASE_URL", "postgresql://u@h/db?sslcert=/c.pem&sslkey=/c.key")
    assert client.kept == ("sslcert=/c.pem", "sslkey=/c.key")


@pytest.mark.parametrize("variable", ["DATABASE_URL", "DIRECT_URL"])
@pytest.mark.parametrize(
    ("query", "fragments"),
    [
        ("sslmode=require&statement_timeout=5000", ["statement_timeout", "options=-c"]),
        ("sslMode=require", ["sslMode", "Remove"]),
        ("pgbouncer=yes", ["pgbouncer='yes'", "true, false"]),
        ("connect_timeout=soon", ["connect_timeout='soon'", "whole number"]),
        ("statement_cache_size=-1", ["statement_cache_size", "whole number"]),
        ("sslmode=sometimes", ["sslmode='sometimes'", "verify-full"]),
        ("channel_binding=maybe", ["channel_binding", "require"]),
        ("schema=" + "s" * 64, ["schema=", "63 bytes"]),
        ("sslmode", ["without a value", "sslmode=<value>"]),
    ],
)
def test_bad_url_parameters_fail_at_start_up_naming_variable_parameter_and_fix(
    variable: str, query: str, fragments: list[str]
) -> None:
    # DIRECT_URL needs DATABASE_URL beside it; only the variable under test is bad.
    env = {"DATABASE_URL": NEON, variable: f"{NEON}?{query}"}
    with pytest.raises(ConfigError) as caught:
        settings(**env)
    message = str(caught.value)
    assert message.startswith(variable)
    for fragment in fragments:
        assert fragment in message
    assert "s3cret" not in message


def test_an_unknown_parameter_value_never_reaches_the_message() -> None:
    with pytest.raises(ConfigError) as caught:
        settings(DATABASE_URL=f"{NEON}?passwd=hunter2")
    assert "passwd" in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DATABASE_URL": f"{NEON}?pgbouncer=true"}, "DATABASE_URL"),
        (
            {
                "DATABASE_URL": f"{NEON_POOLED}?pgbouncer=true",
                "DIRECT_URL": f"{NEON}?sslmode=require&pgbouncer=TRUE",
            },
            "DIRECT_URL",
        ),
    ],
)
def test_listen_through_pgbouncer_true_is_refused_with_the_fix(
    env: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**env).require_listen_url()
    message = str(caught.value)
    assert message.startswith(variable)
    assert "pgbouncer=true" in message
    assert "Set DIRECT_URL to the direct (non-pooler) URL" in message
    assert "s3cret" not in message


def test_pgbouncer_true_is_fine_for_queries_when_direct_url_is_direct() -> None:
    s = settings(
        DATABASE_URL=f"{NEON_POOLED}?pgbouncer=true&connection_limit=1",
        DIRECT_URL=f"{NEON}?pgbouncer=false",
    )
    assert s.require_listen_url() == f"{NEON}?pgbouncer=false"


def test_direct_url_without_database_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="DIRECT_URL is set but DATABASE_URL is not"):
        Settings.from_env({"DIRECT_URL": "postgresql://u@db.example/app"})
