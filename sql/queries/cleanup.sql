-- Deferred worktree cleanup: a story's worktrees stay while any job of the story (in the same
-- repository) is still active, because the next task reuses the story's branch; when the last
-- one ends, all of them go.

-- name: story_jobs
-- Every job of a story with what cleanup needs. $1 story_id.
SELECT j.id, j.status::text AS status, j.branch, j.pushed_at, j.error, j.product_id,
       t.repo_url AS task_repo_url, p.repo_url AS product_repo_url
FROM claude_jobs j
JOIN tasks t ON t.id = j.task_id
JOIN products p ON p.id = j.product_id
WHERE t.story_id = $1
ORDER BY j.created_at, j.id

-- name: jobs_by_id
-- The jobs behind worktree directories found on disk. $1 job ids.
SELECT j.id, j.user_id, j.status::text AS status, j.branch, j.pushed_at, j.error,
       j.product_id, t.story_id, t.repo_url AS task_repo_url, p.repo_url AS product_repo_url
FROM claude_jobs j
JOIN products p ON p.id = j.product_id
LEFT JOIN tasks t ON t.id = j.task_id
WHERE j.id = ANY($1::text[])

-- name: story_of_job
SELECT t.story_id FROM claude_jobs j JOIN tasks t ON t.id = j.task_id WHERE j.id = $1
