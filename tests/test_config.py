"""Settings: every invalid value fails at start-up naming the variable and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from reactor.config import ConfigError, Settings

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
