"""Database URLs written for Prisma and libpq reach asyncpg with only what it understands."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from reactor import db as db_module
from reactor.config import ConfigError, Settings
from reactor.db import Database, _connect_kwargs
from reactor.sqlfiles import Query
from tests.pg import PgServer, unique_name

PRISMA_QUERY = "pgbouncer=true&connection_limit=1&schema=public&connect_timeout=10&sslmode=disable"


@pytest.fixture
def scratch(pg_server: PgServer) -> Iterator[tuple[str, str]]:
    """A throwaway database: (name, url)."""
    name = unique_name("dsn_connect")
    url = pg_server.create_database(name)
    yield name, url
    pg_server.drop_database(name)


@pytest.fixture
def fresh_reports() -> Iterator[None]:
    # The drop warning is once per process; each test here wants to see its own.
    saved = set(db_module._REPORTED_DROPS)
    db_module._REPORTED_DROPS.clear()
    yield
    db_module._REPORTED_DROPS.clear()
    db_module._REPORTED_DROPS.update(saved)


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


def test_prisma_parameters_become_asyncpg_arguments_and_the_rest_is_dropped(
    fresh_reports: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="reactor.db")
    url = "postgresql://app:p%40ss%2Fw0rd@db.example:6543/scrum4me?" + PRISMA_QUERY
    kwargs = _connect_kwargs(url, "reactor-test")
    # The password keeps its percent-encoding: the URL is rebuilt by hand, not re-quoted.
    assert (
        kwargs["dsn"] == "postgresql://app:p%40ss%2Fw0rd@db.example:6543/scrum4me?sslmode=disable"
    )
    assert kwargs["timeout"] == 10.0
    assert kwargs["statement_cache_size"] == 0  # pgbouncer=true, like a -pooler host
    assert kwargs["server_settings"] == {
        "search_path": "public",
        "application_name": "reactor-test",
        "TimeZone": "UTC",
    }
    _connect_kwargs(url, "reactor-listen:x")  # a reconnect does not warn again
    records = [r for r in caplog.records if r.getMessage() == "db.url_parameters_ignored"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert records[0].__dict__["parameters"] == ["connection_limit"]
    assert "REACTOR_POOL_SIZE" in records[0].__dict__["why"]
    assert "w0rd" not in caplog.text


def test_a_pooler_host_still_disables_the_statement_cache() -> None:
    kwargs = _connect_kwargs("postgresql://u@ep-x-pooler.neon.tech/db?sslmode=require", "r")
    assert kwargs["statement_cache_size"] == 0
    assert kwargs["dsn"] == "postgresql://u@ep-x-pooler.neon.tech/db?sslmode=require"
    direct = _connect_kwargs("postgresql://u@ep-x.neon.tech/db?statement_cache_size=50", "r")
    assert direct["statement_cache_size"] == 50
    assert direct["dsn"] == "postgresql://u@ep-x.neon.tech/db"


async def test_a_prisma_url_connects_and_queries(
    aio_loop: None, scratch: tuple[str, str], fresh_reports: None
) -> None:
    name, scratch_url = scratch
    url = with_query(
        scratch_url,
        PRISMA_QUERY + "&channel_binding=prefer&pool_timeout=20"
        "&options=-c%20statement_timeout%3D4321",
    )
    # The same path as start-up: validated by Settings, then connected through the pool.
    settings = Settings.from_env({"HOME": "/home/agent", "DATABASE_URL": url})
    assert settings.database_url is not None
    database = await Database.connect(settings.database_url, max_size=2)
    try:
        row = await database.fetchrow(
            Query(
                "test",
                "SELECT current_setting('search_path') AS search_path,"
                " current_setting('statement_timeout') AS statement_timeout,"
                " current_setting('application_name') AS application_name,"
                " current_database() AS db, 6 * 7 AS answer",
            )
        )
    finally:
        await database.close()
    assert row is not None
    assert row["answer"] == 42
    assert row["db"] == name
    assert row["search_path"] == "public"
    assert row["statement_timeout"] == "4321ms"
    assert row["application_name"] == "reactor"


async def test_a_url_nobody_understands_is_a_config_error_not_an_outage(
    aio_loop: None, scratch: tuple[str, str]
) -> None:
    # URLs that bypass Settings (tests, scripts) get the same check, and the listener's
    # reconnect loop must not mistake it for a database that is down.
    with pytest.raises(ConfigError, match="statement_timeout"):
        await Database.connect(with_query(scratch[1], "statement_timeout=5000"), max_size=1)
