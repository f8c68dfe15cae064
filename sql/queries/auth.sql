-- API tokens: the raw token is never stored or sent; only its sha256 hex is looked up.

-- name: resolve_token
-- $1 sha256 hex of the raw token.
SELECT t.id AS token_id, t.user_id, u.username, u.is_demo,
       t.revoked_at IS NOT NULL AS revoked,
       (t.expires_at IS NOT NULL AND t.expires_at <= now()) AS expired
FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = $1
