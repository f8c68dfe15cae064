-- Bookkeeping for reactor's own migrations and the standalone app schema.
-- Every statement here runs inside a transaction that first takes the advisory lock,
-- so two processes migrating at once serialize instead of racing.

-- name: lock
-- Serialize migrators across processes; released at commit.
SELECT pg_advisory_xact_lock(7316424815723450001)

-- name: create_schema
-- The reactor's own schema. Its ledger lives there, not beside the app's tables, because
-- Prisma compares every table of the app's schema with its migration history: a table of
-- ours in public would read as drift to `prisma migrate dev` (which then offers a reset)
-- and would be pulled into schema.prisma by `prisma db pull`.
CREATE SCHEMA IF NOT EXISTS reactor

-- name: create_bookkeeping
-- The reactor's migration ledger.
CREATE TABLE IF NOT EXISTS reactor.migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    checksum    TEXT NOT NULL,
    applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
)

-- name: applied
-- What is already applied, for checksum comparison.
SELECT version, name, checksum, applied_at FROM reactor.migrations ORDER BY version

-- name: record
-- Record a migration before its body runs, in the same transaction.
INSERT INTO reactor.migrations (version, name, checksum) VALUES ($1, $2, $3)

-- name: bookkeeping_exists
-- Whether the ledger exists yet (a database never migrated by the reactor has none).
SELECT to_regclass('reactor.migrations') IS NOT NULL

-- name: existing_tables
-- Which of the given public tables exist.
SELECT c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname = ANY($1::text[])

-- name: missing_columns
-- Columns the reactor reads or writes that this database lacks (table, column pairs in).
SELECT want.table_name, want.column_name
FROM unnest($1::text[], $2::text[]) AS want(table_name, column_name)
WHERE NOT EXISTS (
    SELECT 1 FROM information_schema.columns c
    WHERE c.table_schema = current_schema()
      AND c.table_name = want.table_name AND c.column_name = want.column_name
)
ORDER BY 1, 2

-- name: present_triggers
-- Which of the reactor's triggers exist (a table recreated by an app migration loses them).
SELECT t.tgname AS name FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgname = ANY($1::text[])
