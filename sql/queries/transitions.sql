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
-- A terminal report, in one statement (one round trip): the job becomes DONE, FAILED or
-- SKIPPED with what the worker (and the push) produced; for a TASK_IMPLEMENTATION job the
-- task follows (DONE or FAILED) and the story is settled; and next_action learns whether a
-- job this worker could claim is still queued. Fenced on token, instance and an active
-- status (and SKIPPED only for TASK_IMPLEMENTATION), so it changes nothing and returns no
-- row when the worker may not write; the caller then explains why.
-- Timestamps keep claimed_at <= started_at <= finished_at.
-- $1 job_id, $2 token_id, $3 instance_id, $4 status, $5 summary, $6 error, $7 branch,
-- $8 pushed, $9 head_sha, $10 model_id, $11 input, $12 output, $13 cache read,
-- $14 cache write, $15 thinking tokens, $16 kinds this worker claims.
WITH done AS (
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
      AND ($4 <> 'SKIPPED' OR kind = 'TASK_IMPLEMENTATION')
    RETURNING id, user_id, product_id, task_id, kind::text AS kind, status::text AS status,
              branch, pushed_at, pr_url, verify_result::text AS verify_result, summary, error,
              started_at, finished_at
),
task AS (
    -- The task follows its job. $4 names the same statuses in TaskStatus.
    UPDATE tasks t
    SET status = $4::text::"TaskStatus", updated_at = now()
    FROM done
    WHERE t.id = done.task_id AND done.kind = 'TASK_IMPLEMENTATION'
      AND $4 IN ('DONE', 'FAILED') AND t.status IS DISTINCT FROM $4::text::"TaskStatus"
    RETURNING t.id, t.story_id
),
verdict AS (
    -- One snapshot for the whole statement: the task's new status is not visible in tasks
    -- yet, so it is put in by hand. FAILED as soon as one task failed, DONE once every task
    -- that is not excluded is DONE, otherwise the story is left as it is.
    SELECT task.story_id, CASE
        WHEN bool_or(CASE WHEN t.id = task.id THEN $4 ELSE t.status::text END = 'FAILED')
            THEN 'FAILED'::"StoryStatus"
        WHEN bool_and(CASE WHEN t.id = task.id THEN $4 ELSE t.status::text END
                      IN ('DONE', 'EXCLUDED'))
            THEN 'DONE'::"StoryStatus"
    END AS status
    FROM task JOIN tasks t ON t.story_id = task.story_id
    GROUP BY task.story_id
),
story AS (
    UPDATE stories s
    SET status = verdict.status, updated_at = now()
    FROM verdict
    WHERE s.id = verdict.story_id AND verdict.status IS NOT NULL
      AND s.status IS DISTINCT FROM verdict.status
    RETURNING s.id
)
-- (story needs no reference here: a data-modifying CTE always runs to completion.)
SELECT done.*,
       EXISTS (
           SELECT 1
           FROM claude_jobs cj LEFT JOIN sprint_runs sr ON sr.id = cj.sprint_run_id
           WHERE cj.user_id = done.user_id AND cj.status = 'QUEUED' AND cj.runtime = 'CLAUDE'
             AND cj.kind::text = ANY($16::text[])
             AND (cj.sprint_run_id IS NULL OR sr.status IN ('QUEUED', 'RUNNING'))
       ) AS more_work,
       -- The payload limit is 8000 bytes, and JSON escapes a control character to six, so
       -- even the shortened texts can overflow it: past 7500 bytes they are left out (the UI
       -- reads them from the row) rather than failing the whole report.
       pg_notify('scrum4me_changes', (
           SELECT CASE WHEN octet_length(m.full_text) <= 7500 THEN m.full_text ELSE m.brief END
           FROM (SELECT
               json_build_object(
                   'type', 'claude_job_status', 'job_id', done.id, 'task_id', done.task_id,
                   'user_id', done.user_id, 'product_id', done.product_id,
                   'status', lower(done.status), 'branch', done.branch,
                   'pushed_at', done.pushed_at, 'error', left(done.error, 500),
                   'summary', left(done.summary, 1000))::text AS full_text,
               json_build_object(
                   'type', 'claude_job_status', 'job_id', done.id, 'task_id', done.task_id,
                   'user_id', done.user_id, 'product_id', done.product_id,
                   'status', lower(done.status), 'branch', left(done.branch, 200),
                   'pushed_at', done.pushed_at, 'texts_omitted', true)::text AS brief) m))
           AS notified
FROM done

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
