-- Trace-event notifications only for executions a live stream watches.
--
-- Migration 0007's trigger notified `glassbox_execution_events` at every statement that
-- added trace events, so every agent step commit sent a NOTIFY. Postgres serialises the
-- commits of notifying transactions: each takes one database-wide lock before it commits
-- and holds it until the commit is flushed, so those commits can no longer share a WAL
-- flush, and each one wakes every listening backend. Measured on the 2-core VM with
-- pgbench (16 clients inserting a step's three trace events per transaction): 310
-- transactions/s with that trigger, 3,400 without it, 2,900-3,100 with this one when
-- nobody watches.
--
-- Live streams (api-lite's `GET /v1/executions/{id}/events`) now register the execution
-- they follow here, renewing it while they are open (api-lite's `live::watch`); the
-- trigger notifies only executions with an unexpired watch. Unlogged: a watch is worth
-- nothing after a crash (api-lite re-registers when its listener reconnects), and
-- renewals write no WAL. api-lite's sweeper deletes expired rows.
--
-- Rolling deploys: a stream served by an api-lite older than this registers nothing, so
-- it is woken by its 10 s fallback read until its replica is upgraded.
CREATE UNLOGGED TABLE execution_watches (
    execution_id uuid PRIMARY KEY,
    until timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION notify_execution_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('glassbox_execution_events', touched.execution_id::text)
    FROM (SELECT DISTINCT execution_id FROM inserted_events) AS touched
    JOIN execution_watches USING (execution_id)
    WHERE execution_watches.until > now();
    RETURN NULL;
END
$$;
