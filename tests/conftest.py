"""Shared fixtures: a real PostgreSQL, one migrated template per session, a clone per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import trio_asyncio

from reactor import aioloop
from reactor.db import Database
from reactor.migrate import migrate
from tests.pg import PgServer, find_server, unique_name


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    return find_server()


@pytest.fixture(scope="session")
def template_db(pg_server: PgServer) -> Iterator[str]:
    """A database migrated once (app schema + reactor migrations); tests clone it."""
    name = unique_name("reactor_tmpl")
    dsn = pg_server.create_database(name)

    async def setup() -> None:
        db = await Database.connect(dsn, max_size=2)
        try:
            await migrate(db, with_app_schema=True)
        finally:
            await db.close()

    try:
        trio_asyncio.run(setup)
        yield name
    finally:
        pg_server.drop_database(name)


@pytest.fixture
def dsn(pg_server: PgServer, template_db: str) -> Iterator[str]:
    """A fresh, fully migrated database for this test only."""
    name = unique_name("reactor_t")
    url = pg_server.create_database(name, template=template_db)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def empty_dsn(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with nothing in it (migration tests)."""
    name = unique_name("reactor_e")
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
async def aio_loop() -> AsyncIterator[None]:
    """The asyncio loop on top of trio that asyncpg (and uvicorn) need."""
    async with aioloop.open_loop():
        yield


@pytest.fixture
async def db(aio_loop: None, dsn: str) -> AsyncIterator[Database]:
    database = await Database.connect(dsn, max_size=4)
    try:
        yield database
    finally:
        await database.close()
