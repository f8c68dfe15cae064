-- Wake-ups for jobs, sent by the database itself, so every enqueue path (the Scrum4Me UI
-- through Prisma, scripts, other services) wakes the reactor without cooperating with it.
-- A notification is only a hint: payloads carry ids, never job text, and the reactor always
-- claims by query. Function and trigger names end in _v1 so that a later version can be
-- installed beside a daemon that still runs this one.

-- job_enqueued: a job became QUEUED (inserted, or requeued by an update).
-- One notification per (user, product, kind) per transaction: a transaction that enqueues
-- 1,000 jobs wakes a reactor once, because a woken reactor claims until the queue is empty.
-- The transaction-local setting marks a group as already announced; it disappears at
-- commit or rollback (and with a rolled-back savepoint, together with its notification).
CREATE OR REPLACE FUNCTION reactor_notify_job_enqueued_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    announced text := 'reactor_enqueued.g'
        || md5(NEW.user_id || '/' || NEW.product_id || '/' || NEW.kind::text);
BEGIN
    IF coalesce(current_setting(announced, true), '') = '1' THEN
        RETURN NULL;
    END IF;
    PERFORM set_config(announced, '1', true);
    PERFORM pg_notify('job_enqueued', json_build_object(
        'job_id', NEW.id,
        'user_id', NEW.user_id,
        'product_id', NEW.product_id,
        'kind', NEW.kind
    )::text);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER reactor_job_enqueued_insert_v1
    AFTER INSERT ON claude_jobs
    FOR EACH ROW WHEN (NEW.status = 'QUEUED')
    EXECUTE FUNCTION reactor_notify_job_enqueued_v1();

CREATE OR REPLACE TRIGGER reactor_job_enqueued_update_v1
    AFTER UPDATE OF status ON claude_jobs
    FOR EACH ROW WHEN (NEW.status = 'QUEUED' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION reactor_notify_job_enqueued_v1();

-- job_status_changed: any change of status, with both ends of the change. The reactor uses
-- it to run deferred worktree cleanup when the last active job of a story ends, whoever
-- ended it (a worker, another reactor, or the UI cancelling), and to let the next job of a
-- story through.
CREATE OR REPLACE FUNCTION reactor_notify_job_status_changed_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('job_status_changed', json_build_object(
        'job_id', NEW.id,
        'user_id', NEW.user_id,
        'product_id', NEW.product_id,
        'task_id', NEW.task_id,
        'kind', NEW.kind,
        'old_status', OLD.status,
        'new_status', NEW.status
    )::text);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER reactor_job_status_changed_v1
    AFTER UPDATE OF status ON claude_jobs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION reactor_notify_job_status_changed_v1();
