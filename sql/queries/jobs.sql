-- claude_jobs: claim, leases, rescue and release.
-- Every write by a worker is fenced by (claimed_by_token_id, worker_instance_id, status),
-- so a late write from a worker whose claim was rescued matches no row and changes nothing.
-- Status changes also send the app's own `claude_job_status` notification on
-- scrum4me_changes (as scrum4me-mcp did), inside the same transaction, so the Scrum4Me UI
-- refreshes live; the reactor's own channels come from the triggers in sql/migrations.

-- name: claim
-- Claim up to $7 of the oldest eligible QUEUED jobs for one worker, in one statement.
-- $1 user_id, $2 token_id, $3 instance_id, $4 product_id or NULL, $5 kinds, $6 lease seconds,
-- $7 how many (the consumer's free slots), $8 job ids this process is cooling down (jobs it
-- just failed to prepare, e.g. no repo root: not retried in a hot loop), $9 the capabilities
-- this worker registers (a job that requires another one is for a specialised worker).
-- Eligible: the user's, QUEUED, runtime CLAUDE, a configured kind, the product if given, no
-- required capability or one of ours;
-- a sprint-run job needs its run QUEUED/RUNNING and no earlier sprint_sequence still active;
-- per-story order: one job of a kind per story at a time, oldest first. A job waits while an
-- older sibling of the same kind is QUEUED, CLAIMED or RUNNING, and while any sibling of that
-- kind is CLAIMED or RUNNING: a failed head that the UI retries must not start beside the
-- successor that is already running on the story branch. A batch never holds two jobs of one
-- story: a later sibling sees the QUEUED head in the snapshot.
-- Shape, in two steps so that a claim locks only what it takes:
-- heads: the cheap filters and the sort run in a fenced subquery over claude_jobs alone
--   (OFFSET 0 keeps it from being flattened); the id check and the story and sequence
--   rules are tested above it row by row in claim order, only until enough heads are found
--   ($7 plus a few spares for a claimer running beside us), without locking anything;
-- candidate: of those, up to $7 still QUEUED are locked, skipping any another claimer holds
--   (the status is re-checked on the locked row version). Locking in the sorted subquery
--   instead would lock every row the rules look at, hundreds per claim on a long queue.
-- tasks and sprint_runs rows are never locked.
WITH heads AS (
    SELECT ordered.id, ordered.created_at, ordered.seq
    FROM (
        SELECT cj.id, cj.kind, cj.task_id, cj.created_at, cj.sprint_run_id, cj.sprint_sequence,
               COALESCE(cj.sprint_sequence, 2147483647) AS seq
        FROM claude_jobs cj
        WHERE cj.user_id = $1
          AND cj.status = 'QUEUED'
          AND cj.runtime = 'CLAUDE'
          AND cj.kind::text = ANY($5::text[])
          AND ($4::text IS NULL OR cj.product_id = $4::text)
          AND NOT (cj.id = ANY($8::text[]))
          AND (cj.required_capability IS NULL OR cj.required_capability = ANY($9::text[]))
          AND (cj.sprint_run_id IS NULL OR EXISTS (
                   SELECT 1 FROM sprint_runs sr
                   WHERE sr.id = cj.sprint_run_id AND sr.status IN ('QUEUED', 'RUNNING')))
        ORDER BY cj.created_at, COALESCE(cj.sprint_sequence, 2147483647), cj.id
        OFFSET 0
    ) ordered
    -- The id names the job's worktree, log and context files: one that could escape those
    -- directories (not cuid-like, handlers/validate.py) is never claimed. Tested here, on
    -- the few rows looked at, not in the scan: a bounded repetition is a slow regex.
    WHERE length(ordered.id) <= 128 AND ordered.id ~ '^[A-Za-z0-9]'
      AND ordered.id !~ '[^A-Za-z0-9_-]'
      AND (ordered.kind <> 'TASK_IMPLEMENTATION' OR ordered.sprint_run_id IS NULL
           OR ordered.sprint_sequence IS NULL OR NOT EXISTS (
               SELECT 1 FROM claude_jobs earlier
               WHERE earlier.sprint_run_id = ordered.sprint_run_id
                 AND earlier.kind = 'TASK_IMPLEMENTATION'
                 AND earlier.sprint_sequence < ordered.sprint_sequence
                 AND earlier.status IN ('QUEUED', 'CLAIMED', 'RUNNING')))
      AND (ordered.task_id IS NULL OR NOT EXISTS (
               SELECT 1 FROM tasks own_task
               JOIN tasks sibling_task ON sibling_task.story_id = own_task.story_id
               JOIN claude_jobs other ON other.task_id = sibling_task.id
               WHERE own_task.id = ordered.task_id
                 AND other.kind = ordered.kind
                 AND other.id <> ordered.id
                 -- The IN list is what the (task_id, status) index can use: finished jobs
                 -- (most of a task's history) are never visited.
                 AND other.status IN ('QUEUED', 'CLAIMED', 'RUNNING')
                 AND (other.status <> 'QUEUED'
                      OR (other.created_at, other.id) < (ordered.created_at, ordered.id))))
    LIMIT $7::int + 8
),
candidate AS (
    SELECT cj.id
    FROM heads JOIN claude_jobs cj ON cj.id = heads.id
    WHERE cj.status = 'QUEUED'
    ORDER BY heads.created_at, heads.seq, heads.id
    LIMIT $7::int
    FOR UPDATE OF cj SKIP LOCKED
),
claimed AS (
    UPDATE claude_jobs j
    SET status = 'CLAIMED',
        claimed_by_token_id = $2,
        -- clock_timestamp(), not now(): the statement's start precedes its snapshot, so a
        -- predecessor seen DONE may have finished after now(); claimed_at must not say
        -- the job was claimed before its turn came.
        claimed_at = clock_timestamp(),
        worker_instance_id = $3,
        plan_snapshot = COALESCE((SELECT t.implementation_plan FROM tasks t WHERE t.id = j.task_id), ''),
        lease_until = now() + make_interval(secs => $6::int),
        updated_at = now()
    FROM candidate c
    WHERE j.id = c.id
    RETURNING j.id, j.user_id, j.product_id, j.task_id, j.kind::text AS kind, j.sprint_run_id,
              j.created_at, j.claimed_at, j.lease_until, j.retry_count
),
run_started AS (
    UPDATE sprint_runs sr
    SET status = 'RUNNING', started_at = COALESCE(sr.started_at, now()), updated_at = now()
    FROM claimed
    WHERE sr.id = claimed.sprint_run_id AND sr.status = 'QUEUED'
    RETURNING sr.id
)
SELECT claimed.*,
       claimed.sprint_run_id IN (SELECT id FROM run_started) AS started_sprint_run,
       EXTRACT(EPOCH FROM clock_timestamp() - claimed.created_at)::float8 AS waited_seconds,
       pg_notify('scrum4me_changes', json_build_object(
           'type', 'claude_job_status', 'job_id', claimed.id, 'task_id', claimed.task_id,
           'user_id', claimed.user_id, 'product_id', claimed.product_id,
           'status', 'claimed')::text) AS notified
FROM claimed
ORDER BY claimed.created_at, claimed.id

-- name: rescue_expired
-- Requeue jobs whose lease expired (retry_count + 1, claim cleared), or fail them once they
-- have used their retries. Locks with SKIP LOCKED and re-checks the status in the UPDATE,
-- so a job completed meanwhile is never overwritten. Also returns the next lease expiry,
-- (in seconds), so the reactor can sleep exactly until then.
-- $1 user_id, $2 kinds, $3 max retries.
WITH expired AS (
    SELECT id FROM claude_jobs
    WHERE user_id = $1
      AND kind::text = ANY($2::text[])
      AND status IN ('CLAIMED', 'RUNNING')
      AND (lease_until < now()
           OR (lease_until IS NULL AND claimed_at < now() - interval '30 minutes'))
    FOR UPDATE SKIP LOCKED
),
failed AS (
    UPDATE claude_jobs j
    SET status = 'FAILED',
        finished_at = now(),
        lease_until = NULL,
        updated_at = now(),
        error = format('lease expired %s times: the worker stopped renewing its lease '
                       '(job_heartbeat) without reporting a result, so the job was given up '
                       'after %s attempts', j.retry_count + 1, j.retry_count + 1)
    FROM expired e
    WHERE j.id = e.id AND j.status IN ('CLAIMED', 'RUNNING') AND j.retry_count >= $3
    RETURNING j.id, j.user_id, j.product_id, j.task_id, 'FAILED'::text AS outcome,
              j.retry_count, j.worker_instance_id
),
requeued AS (
    UPDATE claude_jobs j
    SET status = 'QUEUED',
        claimed_by_token_id = NULL,
        claimed_at = NULL,
        plan_snapshot = NULL,
        lease_until = NULL,
        worker_instance_id = NULL,
        started_at = NULL,
        retry_count = j.retry_count + 1,
        updated_at = now()
    FROM expired e
    WHERE j.id = e.id AND j.status IN ('CLAIMED', 'RUNNING') AND j.retry_count < $3
    RETURNING j.id, j.user_id, j.product_id, j.task_id, 'QUEUED'::text AS outcome,
              j.retry_count, e.id AS previous_instance
),
rescued AS (
    SELECT id, user_id, product_id, task_id, outcome, retry_count FROM failed
    UNION ALL
    SELECT id, user_id, product_id, task_id, outcome, retry_count FROM requeued
)
SELECT
    (SELECT COALESCE(json_agg(json_build_object(
        'job_id', r.id, 'outcome', r.outcome, 'retry_count', r.retry_count,
        'notified', pg_notify('scrum4me_changes', json_build_object(
            'type', 'claude_job_status', 'job_id', r.id, 'task_id', r.task_id,
            'user_id', r.user_id, 'product_id', r.product_id,
            'status', lower(r.outcome))::text))), '[]'::json)
     FROM rescued r) AS rescued,
    (SELECT EXTRACT(EPOCH FROM min(lease_until) - now())::float8 FROM claude_jobs
     WHERE user_id = $1 AND kind::text = ANY($2::text[])
       AND status IN ('CLAIMED', 'RUNNING') AND lease_until > now()) AS next_expiry_in

-- name: heartbeat
-- Extend the lease, only for the owning token and instance of an active job.
-- $1 job_id, $2 token_id, $3 instance_id, $4 lease seconds.
UPDATE claude_jobs j
SET lease_until = now() + make_interval(secs => $4::int)
WHERE j.id = $1 AND j.claimed_by_token_id = $2 AND j.worker_instance_id = $3
  AND j.status IN ('CLAIMED', 'RUNNING')
RETURNING j.id, j.lease_until, j.kind::text AS kind, j.sprint_run_id,
          (SELECT sr.status::text FROM sprint_runs sr WHERE sr.id = j.sprint_run_id)
              AS sprint_run_status,
          (SELECT sr.pause_context ->> 'pause_reason' FROM sprint_runs sr
           WHERE sr.id = j.sprint_run_id) AS sprint_run_pause_reason

-- name: heartbeat_many
-- Renew the leases of every job this instance holds (the daemon's lease keeper).
-- $1 job ids, $2 token_id, $3 instance_id, $4 lease seconds.
UPDATE claude_jobs
SET lease_until = now() + make_interval(secs => $4::int)
WHERE id = ANY($1::text[]) AND claimed_by_token_id = $2 AND worker_instance_id = $3
  AND status IN ('CLAIMED', 'RUNNING')
RETURNING id

-- name: ownership
-- What a guard needs to explain why a worker may not write to a job.
SELECT j.id, j.user_id, j.product_id, j.task_id, j.kind::text AS kind,
       j.status::text AS status, j.claimed_by_token_id, j.worker_instance_id,
       j.branch, j.base_sha, j.pushed_at, j.pr_url, j.verify_result::text AS verify_result,
       j.summary, j.error, j.claimed_at, j.started_at, j.finished_at, j.retry_count,
       j.lease_until, t.story_id, t.repo_url AS task_repo_url, p.repo_url AS product_repo_url
FROM claude_jobs j
LEFT JOIN tasks t ON t.id = j.task_id
LEFT JOIN products p ON p.id = j.product_id
WHERE j.id = $1

-- name: rollback_claim
-- Give a claim back (no repo root, worktree failure, waiter gone, shutdown): QUEUED again with
-- the claim cleared and retry_count unchanged. Fenced on token and instance. The branch stays:
-- an attempt stopped at shutdown may have committed to it, and the next attempt continues it.
-- $1 job_id, $2 token_id, $3 instance_id.
UPDATE claude_jobs
SET status = 'QUEUED',
    claimed_by_token_id = NULL,
    claimed_at = NULL,
    plan_snapshot = NULL,
    worker_instance_id = NULL,
    lease_until = NULL,
    started_at = NULL,
    updated_at = now()
WHERE id = $1 AND claimed_by_token_id = $2 AND worker_instance_id = $3
  AND status IN ('CLAIMED', 'RUNNING')
RETURNING id, pg_notify('scrum4me_changes', json_build_object(
    'type', 'claude_job_status', 'job_id', id, 'task_id', task_id, 'user_id', user_id,
    'product_id', product_id, 'status', 'queued')::text) AS notified

-- name: set_worktree
-- Persist the branch and base of a freshly made worktree (the push at done reads them).
-- $1 job_id, $2 token_id, $3 instance_id, $4 branch, $5 base_sha.
UPDATE claude_jobs
SET branch = $4, base_sha = $5, updated_at = now()
WHERE id = $1 AND claimed_by_token_id = $2 AND worker_instance_id = $3
  AND status IN ('CLAIMED', 'RUNNING')
RETURNING id

-- name: story_branch
-- The story's branch: that of its oldest job that has one (branch per story). The job itself
-- counts: a retried first job (rescued, or requeued at shutdown) continues its own branch.
-- $1 story_id.
SELECT j.id, j.branch
FROM claude_jobs j JOIN tasks t ON t.id = j.task_id
WHERE t.story_id = $1 AND j.branch IS NOT NULL
ORDER BY j.created_at, j.id
LIMIT 1

-- name: active_story_jobs
-- The story's other jobs that are CLAIMED or RUNNING: their worktrees are in use and must
-- never be evicted to free the story branch. $1 story_id, $2 job_id.
SELECT j.id
FROM claude_jobs j JOIN tasks t ON t.id = j.task_id
WHERE t.story_id = $1 AND j.id <> $2 AND j.status IN ('CLAIMED', 'RUNNING')

-- name: held_by_instance
-- Jobs this instance still holds (used at shutdown and by the lease keeper).
SELECT id FROM claude_jobs
WHERE claimed_by_token_id = $1 AND worker_instance_id = $2 AND status IN ('CLAIMED', 'RUNNING')

-- name: context
-- Everything an agent needs to work on a claimed job (the wait_for_job payload).
SELECT j.id, j.kind::text AS kind, j.status::text AS status, j.product_id, j.task_id,
       j.sprint_run_id, j.branch, j.base_sha, j.retry_count, j.lease_until,
       j.claimed_by_token_id, j.worker_instance_id,
       j.requested_model, j.requested_thinking_budget, j.requested_permission_mode,
       t.title AS task_title, t.description AS task_description,
       t.implementation_plan, t.priority AS task_priority, t.repo_url AS task_repo_url,
       t.requires_opus, t.code AS task_code,
       s.id AS story_id, s.title AS story_title, s.description AS story_description,
       s.acceptance_criteria, s.code AS story_code,
       b.id AS pbi_id, b.title AS pbi_title, b.priority AS pbi_priority,
       b.status::text AS pbi_status,
       sp.id AS sprint_id, sp.sprint_goal, sp.status::text AS sprint_status,
       p.name AS product_name, p.repo_url AS product_repo_url, p.preferred_model,
       p.thinking_budget_default, p.preferred_permission_mode
FROM claude_jobs j
JOIN products p ON p.id = j.product_id
LEFT JOIN tasks t ON t.id = j.task_id
LEFT JOIN stories s ON s.id = t.story_id
LEFT JOIN pbis b ON b.id = s.pbi_id
LEFT JOIN sprint_runs sr ON sr.id = j.sprint_run_id
LEFT JOIN sprints sp ON sp.id = COALESCE(sr.sprint_id, t.sprint_id, s.sprint_id)
WHERE j.id = $1

-- name: status_of
-- The current status of a job (after its agent exits: did it report already?).
SELECT status::text AS status, claimed_by_token_id, worker_instance_id FROM claude_jobs WHERE id = $1
