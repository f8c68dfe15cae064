-- claude_workers: worker presence, as scrum4me-mcp keeps it (one row per user, token and
-- instance; the Scrum4Me NavBar counts rows seen in the last seconds). Registration and
-- removal also send the app's presence notifications on scrum4me_changes.

-- name: register
-- Upsert this instance's row. $1 id for a new row, $2 user_id, $3 token_id, $4 instance_id,
-- $5 hostname, $6 pid, $7 capabilities, $8 product_id or NULL.
WITH upserted AS (
    INSERT INTO claude_workers (id, user_id, token_id, instance_id, hostname, pid, capabilities,
                                product_id, runtime, started_at, last_seen_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::text[], $8, 'CLAUDE', now(), now())
    ON CONFLICT (user_id, token_id, instance_id) DO UPDATE
    SET last_seen_at = now(), hostname = EXCLUDED.hostname, pid = EXCLUDED.pid,
        capabilities = EXCLUDED.capabilities, product_id = EXCLUDED.product_id,
        runtime = EXCLUDED.runtime
    RETURNING id, user_id, token_id, instance_id, product_id
)
SELECT id, pg_notify('scrum4me_changes', json_build_object(
    'type', 'claude_worker_heartbeat', 'worker_id', token_id, 'user_id', user_id,
    'token_id', token_id, 'instance_id', instance_id, 'product_id', product_id,
    'runtime', 'CLAUDE')::text) AS notified
FROM upserted

-- name: unregister
-- Remove this instance's row. $1 user_id, $2 token_id, $3 instance_id.
WITH removed AS (
    DELETE FROM claude_workers
    WHERE user_id = $1 AND token_id = $2 AND instance_id = $3
    RETURNING user_id, token_id, instance_id
)
SELECT count(*) AS removed,
       bool_or(pg_notify('scrum4me_changes', json_build_object(
           'type', 'claude_worker_offline', 'worker_id', token_id, 'user_id', user_id,
           'token_id', token_id, 'instance_id', instance_id)::text) IS NULL) AS notified
FROM removed

-- name: heartbeat_many
-- Refresh several instances' rows at once (MCP-over-HTTP clients of one daemon).
-- $1 token ids, $2 instance ids (pairwise).
UPDATE claude_workers w SET last_seen_at = now()
FROM unnest($1::text[], $2::text[]) AS beat(token_id, instance_id)
WHERE w.token_id = beat.token_id AND w.instance_id = beat.instance_id
RETURNING w.token_id, w.instance_id

-- name: live_workers
-- Workers of this user seen recently (for /health and `reactor status`).
-- $1 user_id or NULL for all users, $2 window in seconds.
SELECT w.id, w.user_id, w.instance_id, w.hostname, w.pid, w.runtime::text AS runtime,
       w.started_at, w.last_seen_at,
       EXTRACT(EPOCH FROM now() - w.last_seen_at)::float8 AS seen_seconds_ago
FROM claude_workers w
WHERE ($1::text IS NULL OR w.user_id = $1::text)
  AND w.last_seen_at > now() - make_interval(secs => $2::int)
ORDER BY w.last_seen_at DESC
