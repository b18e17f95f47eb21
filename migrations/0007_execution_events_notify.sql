-- Live trace streams wake on new events instead of polling: every statement that adds
-- trace events notifies the channel `glassbox_execution_events` once per execution, with
-- the execution id as payload. Notifications are sent at commit, so a woken stream always
-- finds the new rows; the ones of a rolled-back transaction are never sent.
CREATE FUNCTION notify_execution_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('glassbox_execution_events', execution_id::text)
    FROM (SELECT DISTINCT execution_id FROM inserted_events) AS touched;
    RETURN NULL;
END
$$;

CREATE TRIGGER execution_events_notify
    AFTER INSERT ON execution_events
    REFERENCING NEW TABLE AS inserted_events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_execution_events();
