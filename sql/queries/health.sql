-- /health and /metrics: one cheap statement that also proves the database answers.

-- name: snapshot
-- $1 user_id, $2 kinds, $3 token_id, $4 instance_id.
SELECT
    (SELECT count(*) FROM claude_jobs
     WHERE user_id = $1 AND status = 'QUEUED' AND runtime = 'CLAUDE'
       AND kind::text = ANY($2::text[])) AS queue_depth,
    (SELECT count(*) FROM claude_jobs
     WHERE claimed_by_token_id = $3 AND worker_instance_id = $4
       AND status IN ('CLAIMED', 'RUNNING')) AS in_flight,
    pg_notification_queue_usage()::float8 AS notify_queue_usage
