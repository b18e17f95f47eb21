-- One lifecycle per job kind: an event row for every file transition, the mark the
-- sweeper needs to tell a lost last attempt from a retryable one, and the model answer
-- an agent step records (with its spend) before its tools run.

-- Every transition of a file, in order (created, queued, claimed, ready, failed,
-- retrying, dead_lettered, released, requeued, reprocessed, redriven), written by
-- shared::files in the transaction of the transition.
CREATE TABLE file_events (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_id    uuid NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    org_id     uuid NOT NULL,
    kind       text NOT NULL,
    data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX file_events_by_file ON file_events (file_id, id);

-- Set at claim: the lease is held on the message's last allowed receive. When such a
-- lease runs out with no outcome recorded (the worker died, or its write failed), SQS
-- has dead-lettered the message, so the sweeper records the job as dead-lettered instead
-- of enqueueing it past maxReceiveCount.
ALTER TABLE files ADD COLUMN last_receive boolean NOT NULL DEFAULT false;
ALTER TABLE executions ADD COLUMN last_receive boolean NOT NULL DEFAULT false;

-- Set at claim: the SQS message id the lease was taken with. A claim that finds a live
-- lease drops a different message of the job (a duplicate), and leaves the holder's own
-- message for when the lease has run out (the holder died or could not record an
-- outcome).
ALTER TABLE files ADD COLUMN lease_message_id text;
ALTER TABLE executions ADD COLUMN lease_message_id text;

-- The model's answer for the step in progress, {"step": n, "message": {...}}, recorded
-- with its tokens and cost before the step's tools run and cleared when the step
-- commits. A step redone after a crash reuses it instead of asking the model again, so
-- the tool ledger's results always belong to the calls the conversation shows.
ALTER TABLE executions ADD COLUMN pending_completion jsonb;

-- The sweeper looks for jobs waiting on a queue: `queued_at` is when a job (re-)entered
-- it, for a retrying one when its backoff ends. (On a very large table, build these
-- CONCURRENTLY by hand before deploying; IF NOT EXISTS then skips them here.)
CREATE INDEX IF NOT EXISTS files_waiting ON files (queued_at) WHERE status IN ('queued', 'retrying');
DROP INDEX IF EXISTS files_queued;
CREATE INDEX IF NOT EXISTS executions_waiting ON executions (queued_at) WHERE status = 'queued';
