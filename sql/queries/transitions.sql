-- Status transitions reported by a worker (update_job_status). Every write is fenced on the
-- worker's token and instance and on an active status, so a late report from a worker whose
-- claim was rescued, or a report on a job the UI cancelled, changes nothing.

-- name: mark_running
-- $1 job_id, $2 token_id, $3 instance_id.
UPDATE claude_jobs
SET status = 'RUNNING',
    claimed_at = COALESCE(claimed_at, now()),
    started_at = COALESCE(started_at, now()),
    updated_at = now()
WHERE id = $1 AND claimed_by_token_id = $2 AND worker_instance_id = $3
  AND status IN ('CLAIMED', 'RUNNING')
RETURNING id, status::text AS status, branch, pushed_at, pr_url,
          verify_result::text AS verify_result, summary, error, started_at, finished_at,
          pg_notify('scrum4me_changes', json_build_object(
              'type', 'claude_job_status', 'job_id', id, 'task_id', task_id, 'user_id', user_id,
              'product_id', product_id, 'status', 'running')::text) AS notified

-- name: finish
-- A terminal report: DONE, FAILED or SKIPPED, with what the worker (and the push) produced.
-- Timestamps keep claimed_at <= started_at <= finished_at.
-- $1 job_id, $2 token_id, $3 instance_id, $4 status, $5 summary, $6 error, $7 branch,
-- $8 pushed, $9 head_sha, $10 model_id, $11 input, $12 output, $13 cache read,
-- $14 cache write, $15 thinking tokens.
UPDATE claude_jobs
SET status = $4::"ClaudeJobStatus",
    claimed_at = COALESCE(claimed_at, now()),
    started_at = COALESCE(started_at, now()),
    finished_at = now(),
    lease_until = NULL,
    summary = COALESCE($5, summary),
    error = COALESCE($6, error),
    branch = COALESCE($7, branch),
    pushed_at = CASE WHEN $8::bool THEN now() ELSE pushed_at END,
    head_sha = COALESCE($9, head_sha),
    model_id = COALESCE($10, model_id),
    input_tokens = COALESCE($11, input_tokens),
    output_tokens = COALESCE($12, output_tokens),
    cache_read_tokens = COALESCE($13, cache_read_tokens),
    cache_write_tokens = COALESCE($14, cache_write_tokens),
    actual_thinking_tokens = COALESCE($15, actual_thinking_tokens),
    updated_at = now()
WHERE id = $1 AND claimed_by_token_id = $2 AND worker_instance_id = $3
  AND status IN ('CLAIMED', 'RUNNING')
RETURNING id, task_id, kind::text AS kind, status::text AS status, branch, pushed_at, pr_url,
          verify_result::text AS verify_result, summary, error, started_at, finished_at,
          -- The payload limit is 8000 bytes, and JSON escapes a control character to six, so
          -- even the shortened texts can overflow it: past 7500 bytes they are left out (the
          -- UI reads them from the row) rather than failing the whole report.
          pg_notify('scrum4me_changes', (
              SELECT CASE WHEN octet_length(m.full_text) <= 7500 THEN m.full_text
                          ELSE m.brief END
              FROM (SELECT
                  json_build_object(
                      'type', 'claude_job_status', 'job_id', id, 'task_id', task_id,
                      'user_id', user_id, 'product_id', product_id,
                      'status', lower(status::text), 'branch', branch, 'pushed_at', pushed_at,
                      'error', left(error, 500), 'summary', left(summary, 1000))::text
                      AS full_text,
                  json_build_object(
                      'type', 'claude_job_status', 'job_id', id, 'task_id', task_id,
                      'user_id', user_id, 'product_id', product_id,
                      'status', lower(status::text), 'branch', left(branch, 200),
                      'pushed_at', pushed_at, 'texts_omitted', true)::text AS brief) m))
              AS notified

-- name: set_task_status
-- The task follows its job (DONE or FAILED). $1 task_id, $2 task status.
UPDATE tasks SET status = $2::"TaskStatus", updated_at = now()
WHERE id = $1 AND status IS DISTINCT FROM $2::"TaskStatus"
RETURNING story_id

-- name: settle_story
-- A story is FAILED as soon as one of its tasks failed, DONE once every task that is not
-- excluded is DONE; otherwise it is left as it is. $1 story_id.
UPDATE stories s
SET status = verdict.status, updated_at = now()
FROM (
    SELECT CASE
        WHEN bool_or(t.status = 'FAILED') THEN 'FAILED'::"StoryStatus"
        WHEN bool_and(t.status IN ('DONE', 'EXCLUDED')) THEN 'DONE'::"StoryStatus"
    END AS status
    FROM tasks t WHERE t.story_id = $1
) verdict
WHERE s.id = $1 AND verdict.status IS NOT NULL AND s.status IS DISTINCT FROM verdict.status
RETURNING s.status::text AS status

-- name: claimable_exists
-- Whether a QUEUED job this worker could claim exists (its user, runtime CLAUDE, its kinds, a
-- runnable sprint run): next_action needs a yes or no, not a count of the whole queue.
-- Jobs waiting their turn in a story or sprint sequence count: they become claimable as the
-- earlier ones finish. $1 user_id, $2 kinds.
SELECT EXISTS (
    SELECT 1
    FROM claude_jobs cj LEFT JOIN sprint_runs sr ON sr.id = cj.sprint_run_id
    WHERE cj.user_id = $1 AND cj.status = 'QUEUED' AND cj.runtime = 'CLAUDE'
      AND cj.kind::text = ANY($2::text[])
      AND (cj.sprint_run_id IS NULL OR sr.status IN ('QUEUED', 'RUNNING'))
)

-- name: queue_counts
-- check_queue_empty: the user's QUEUED/CLAIMED/RUNNING jobs per product the user can access
-- (owner or member). $1 user_id, $2 product_id or NULL.
SELECT cj.product_id, count(*) AS remaining
FROM claude_jobs cj
JOIN products p ON p.id = cj.product_id
WHERE cj.user_id = $1
  AND cj.status IN ('QUEUED', 'CLAIMED', 'RUNNING')
  AND ($2::text IS NULL OR cj.product_id = $2::text)
  AND (p.user_id = $1 OR EXISTS (
      SELECT 1 FROM product_members m WHERE m.product_id = p.id AND m.user_id = $1))
GROUP BY cj.product_id

-- name: product_access
-- Whether the user may see a product (owner or member). $1 product_id, $2 user_id.
SELECT p.id FROM products p
WHERE p.id = $1 AND (p.user_id = $2 OR EXISTS (
    SELECT 1 FROM product_members m WHERE m.product_id = p.id AND m.user_id = $2))
