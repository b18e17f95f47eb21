-- A running worker learns of a pause or cancel by LISTEN/NOTIFY instead of polling, with
-- the design of migration 0007: a trigger notifies at commit, the payload is the
-- execution id, and each worker process holds one LISTEN connection that wakes only the
-- run concerned. The channel is its own (`glassbox_execution_control`), so a worker is
-- not woken by the trace events its own step commits add. The trigger fires only when
-- `control` actually changes; a step commit that leaves it alone costs the WHEN check.
CREATE FUNCTION notify_execution_control() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('glassbox_execution_control', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER execution_control_notify
    AFTER UPDATE OF control ON executions
    FOR EACH ROW
    WHEN (NEW.control IS DISTINCT FROM OLD.control)
    EXECUTE FUNCTION notify_execution_control();
