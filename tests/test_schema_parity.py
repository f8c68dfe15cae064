"""The standalone app schema matches the Prisma schema, column for column."""

from __future__ import annotations

from pathlib import Path

from reactor.db import Database
from reactor.migrate import APP_TABLES
from reactor.sqlfiles import Query

DATA = Path(__file__).parent / "data"

COLUMNS = Query(
    "test.columns",
    """
SELECT c.table_name, c.column_name,
       CASE WHEN c.data_type = 'USER-DEFINED' THEN c.udt_name
            WHEN c.data_type = 'ARRAY' THEN substr(c.udt_name, 2) || '[]'
            WHEN c.character_maximum_length IS NOT NULL
                THEN c.data_type || '(' || c.character_maximum_length || ')'
            WHEN c.data_type IN ('timestamp without time zone', 'timestamp with time zone')
                THEN c.data_type || '(' || c.datetime_precision || ')'
            WHEN c.data_type = 'numeric'
                THEN 'numeric(' || c.numeric_precision || ',' || c.numeric_scale || ')'
            ELSE c.data_type END AS type,
       c.is_nullable, coalesce(c.column_default, '') AS column_default
FROM information_schema.columns c
WHERE c.table_schema = 'public' AND c.table_name = ANY($1::text[])
ORDER BY c.table_name, c.ordinal_position
""",
)

ENUMS = Query(
    "test.enums",
    """
SELECT t.typname, string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) AS labels
FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
GROUP BY t.typname ORDER BY t.typname
""",
)

INDEXES = Query(
    "test.indexes",
    """
SELECT tbl.relname AS table_name, idx.relname AS index_name, i.indisunique AS is_unique,
       string_agg(a.attname, ',' ORDER BY k.ordinality) AS columns
FROM pg_index i
JOIN pg_class idx ON idx.oid = i.indexrelid
JOIN pg_class tbl ON tbl.oid = i.indrelid
JOIN pg_namespace n ON n.oid = tbl.relnamespace AND n.nspname = 'public'
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ordinality)
JOIN pg_attribute a ON a.attrelid = tbl.oid AND a.attnum = k.attnum
WHERE tbl.relname = ANY($1::text[])
GROUP BY tbl.relname, idx.relname, i.indisunique
ORDER BY 1, 2
""",
)


def _expected(name: str) -> list[list[str]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t") for line in lines if line]


async def test_columns_match_the_prisma_schema(db: Database) -> None:
    rows = await db.fetch(COLUMNS, list(APP_TABLES))
    actual = [
        [r["table_name"], r["column_name"], r["type"], r["is_nullable"], r["column_default"]]
        for r in rows
    ]
    expected = _expected("prisma_columns.tsv")
    expected_sorted = sorted(expected, key=lambda row: row[0])
    # Compare per table in ordinal order: same columns, types, nullability and defaults.
    for table in APP_TABLES:
        assert [r for r in actual if r[0] == table] == [
            r for r in expected_sorted if r[0] == table
        ], table
    assert len(actual) == len(expected)


async def test_enum_types_and_values_match_the_prisma_schema(db: Database) -> None:
    actual = {r["typname"]: r["labels"] for r in await db.fetch(ENUMS)}
    expected = {row[0]: row[1] for row in _expected("prisma_enums.tsv")}
    assert actual == expected


async def test_unique_keys_and_indexes_match_the_prisma_schema(db: Database) -> None:
    rows = await db.fetch(INDEXES, list(APP_TABLES))
    actual = sorted(
        (r["table_name"], r["index_name"], "t" if r["is_unique"] else "f", r["columns"])
        for r in rows
    )
    expected = sorted(tuple(row) for row in _expected("prisma_indexes.tsv"))
    assert actual == expected
