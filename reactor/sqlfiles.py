"""SQL kept in files: named queries, migrations and the standalone app schema.

Queries live in ``sql/queries/<file>.sql`` as blocks that start with ``-- name: <name>``;
a query is addressed as ``<file>.<name>`` (``jobs.claim``). Modules bind the queries they
use at import time with :func:`query`, so a renamed or missing query stops the process at
start-up instead of failing on the first job. No SQL text is ever assembled from values:
values always travel as ``$n`` parameters.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

_NAME_LINE = re.compile(r"^-- name: ([a-z][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Query:
    """One named SQL statement loaded from sql/queries."""

    name: str
    text: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Migration:
    """One forward-only migration file, ``NNNN_description.sql``."""

    version: int
    name: str
    text: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def _root() -> Traversable:
    return resources.files("reactor.sql")


def parse_queries(prefix: str, text: str) -> dict[str, Query]:
    """Split one queries file into its named blocks."""
    matches = list(_NAME_LINE.finditer(text))
    if not matches and text.strip():
        raise ValueError(f"sql/queries/{prefix}.sql has SQL but no '-- name: <name>' line")
    found: dict[str, Query] = {}
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        name = f"{prefix}.{match.group(1)}"
        if name in found:
            raise ValueError(f"query {name} is defined twice")
        if not body:
            raise ValueError(f"query {name} is empty")
        found[name] = Query(name, body)
    return found


def load_queries() -> dict[str, Query]:
    queries: dict[str, Query] = {}
    folder = _root() / "queries"
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".sql"):
            queries.update(parse_queries(entry.name[:-4], entry.read_text(encoding="utf-8")))
    return queries


def load_migrations() -> list[Migration]:
    migrations: list[Migration] = []
    for entry in (_root() / "migrations").iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match is None:
            if entry.name.endswith(".sql"):
                raise ValueError(f"migration file {entry.name} is not named NNNN_description.sql")
            continue
        text = entry.read_text(encoding="utf-8")
        migrations.append(Migration(int(match.group(1)), match.group(2), text))
    migrations.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a version number: {versions}")
    return migrations


def app_schema_sql() -> str:
    return (_root() / "app_schema" / "scrum4me.sql").read_text(encoding="utf-8")


QUERIES = load_queries()


def query(name: str) -> Query:
    """Look up a named query; raises KeyError (at import of the caller) if it does not exist."""
    try:
        return QUERIES[name]
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} in sql/queries") from None
