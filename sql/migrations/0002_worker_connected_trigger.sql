-- worker_connected: a claude_workers row appeared (a worker registered, or re-registered
-- after its row was deleted), or came back after being stale. The reactor refreshes its
-- view of live workers and runs a dispatch pass when it hears one.

CREATE OR REPLACE FUNCTION reactor_notify_worker_connected_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('worker_connected', json_build_object(
        'worker_id', NEW.id,
        'user_id', NEW.user_id,
        'instance_id', NEW.instance_id
    )::text);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE TRIGGER reactor_worker_connected_insert_v1
    AFTER INSERT ON claude_workers
    FOR EACH ROW
    EXECUTE FUNCTION reactor_notify_worker_connected_v1();

-- A heartbeat after more than 30 s of silence is a reconnect, not a routine tick: the same
-- liveness window scrum4me-mcp's tier logic uses. Routine 10 s heartbeats stay silent.
CREATE OR REPLACE TRIGGER reactor_worker_connected_update_v1
    AFTER UPDATE OF last_seen_at ON claude_workers
    FOR EACH ROW WHEN (NEW.last_seen_at - OLD.last_seen_at > interval '30 seconds')
    EXECUTE FUNCTION reactor_notify_worker_connected_v1();
