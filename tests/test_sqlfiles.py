"""SQL files: the loader's rules, and every named query is valid against the real schema."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

from reactor.sqlfiles import QUERIES, load_migrations, parse_queries, query


def test_blocks_are_named_by_file_and_name() -> None:
    parsed = parse_queries(
        "jobs", "-- header\n\n-- name: one\n-- purpose\nSELECT 1\n\n-- name: two\nSELECT 2\n"
    )
    assert {name: q.text for name, q in parsed.items()} == {
        "jobs.one": "-- purpose\nSELECT 1",
        "jobs.two": "SELECT 2",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", "defined twice"),
        ("-- name: a\n\n-- name: b\nSELECT 1\n", "empty"),
        ("SELECT 1\n", r"no '-- name"),
    ],
)
def test_malformed_query_files_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_queries("broken", text)


def test_an_unknown_query_name_fails_loudly() -> None:
    with pytest.raises(KeyError, match=r"no SQL query named 'jobs\.nope'"):
        query("jobs.nope")


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions)
    assert versions[0] == 1


def test_every_named_query_is_valid_against_the_migrated_schema(dsn: str) -> None:
    async def prepare_all() -> list[str]:
        conn = await asyncpg.connect(dsn)
        failures = []
        try:
            for name, q in sorted(QUERIES.items()):
                if (
                    q.text.lstrip()
                    .upper()
                    .startswith(("CREATE TABLE", "CREATE DATABASE", "DROP DATABASE"))
                ):
                    continue  # DDL cannot be prepared; it runs in the migration tests
                try:
                    await conn.prepare(q.text)
                except asyncpg.PostgresError as exc:
                    failures.append(f"{name}: {exc}")
        finally:
            await conn.close()
        return failures

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, prepare_all()).result() == []
