-- The listening session's own health round-trip.

-- name: tick
-- Run on the dedicated LISTEN session every ping interval, as ONE statement (an idle reactor
-- costs one query per interval): which channels the session still listens on, a
-- self-addressed NOTIFY that must come back, and, when this process has a presence row,
-- its heartbeat plus a check that the token is still valid.
-- $1 ping channel, $2 nonce, $3 token_id or NULL, $4 instance_id or NULL.
WITH token AS (
    SELECT id, (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS valid
    FROM api_tokens WHERE id = $3::text
),
beat AS (
    UPDATE claude_workers w SET last_seen_at = now()
    FROM token
    WHERE token.valid AND w.token_id = token.id AND w.instance_id = $4::text
    RETURNING w.id
)
SELECT ARRAY(SELECT pg_listening_channels())::text[] AS channels,
       pg_notify($1, $2) AS pinged,
       (SELECT valid FROM token) AS token_valid,
       (SELECT count(*) FROM beat) AS beats
