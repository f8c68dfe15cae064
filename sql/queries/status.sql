-- `reactor status`: what an operator wants to see at a glance. $1 user_id or NULL (all users).

-- name: queue_by_product
SELECT p.id AS product_id, p.name AS product,
       count(*) FILTER (WHERE j.status = 'QUEUED') AS queued,
       count(*) FILTER (WHERE j.status = 'CLAIMED') AS claimed,
       count(*) FILTER (WHERE j.status = 'RUNNING') AS running,
       min(j.created_at) FILTER (WHERE j.status = 'QUEUED') AS oldest_queued
FROM claude_jobs j JOIN products p ON p.id = j.product_id
WHERE j.status IN ('QUEUED', 'CLAIMED', 'RUNNING') AND ($1::text IS NULL OR j.user_id = $1::text)
GROUP BY p.id, p.name
ORDER BY p.name

-- name: recent_jobs
-- $2 how many.
SELECT j.id, j.kind::text AS kind, j.status::text AS status, p.name AS product,
       t.title AS task, j.worker_instance_id, j.branch, j.created_at, j.claimed_at,
       j.finished_at, j.retry_count,
       EXTRACT(EPOCH FROM j.claimed_at - j.created_at)::float8 AS wait_seconds,
       EXTRACT(EPOCH FROM COALESCE(j.finished_at, now()) - COALESCE(j.started_at, j.claimed_at))::float8
           AS work_seconds,
       left(j.error, 120) AS error
FROM claude_jobs j
JOIN products p ON p.id = j.product_id
LEFT JOIN tasks t ON t.id = j.task_id
WHERE $1::text IS NULL OR j.user_id = $1::text
ORDER BY j.updated_at DESC, j.id
LIMIT $2::int
