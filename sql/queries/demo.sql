-- `reactor demo`'s closing table.

-- name: summary
-- $1 job ids.
SELECT j.id, j.status::text AS status, j.branch, j.pushed_at, t.title,
       EXTRACT(EPOCH FROM j.claimed_at - j.created_at)::float8 AS wait_seconds,
       EXTRACT(EPOCH FROM j.finished_at - j.started_at)::float8 AS work_seconds
FROM claude_jobs j JOIN tasks t ON t.id = j.task_id
WHERE j.id = ANY($1::text[])
