-- Ops: the audit log, DLQ redrive tasks, and schedules with their fires.

-- Every ops action: who, when, what, and how many.
CREATE TABLE audit_log (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor    text NOT NULL,
    -- e.g. dlq.redrive, dlq.discard, stuck.requeue, schedule.create, schedule.fire
    action   text NOT NULL,
    -- What it acted on: a queue, a schedule id, …
    target   text NOT NULL,
    count    integer NOT NULL DEFAULT 0,
    details  jsonb NOT NULL DEFAULT '{}'::jsonb,
    at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX audit_log_recent ON audit_log (at DESC, id DESC);

-- DLQ redrives run in the background; their progress lives here for the CLI's progress
-- bar and the dashboard.
CREATE TABLE ops_tasks (
    id           uuid PRIMARY KEY,
    action       text NOT NULL CHECK (action IN ('redrive')),
    queue        text NOT NULL,
    status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    -- move_task (SQS StartMessageMoveTask) or receive_send_delete
    method       text NOT NULL,
    requested_by text NOT NULL,
    selector     jsonb NOT NULL,
    total        integer,
    moved        integer NOT NULL DEFAULT 0,
    failed       integer NOT NULL DEFAULT 0,
    error        text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);

-- Reprocessing on a cron schedule (UTC).
CREATE TABLE schedules (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    cron       text NOT NULL,
    action     text NOT NULL CHECK (action IN ('retry_transient', 'reembed', 'reextract')),
    -- Narrows the files: {"org_id": "...", "limit": 1000}
    filter     jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled    boolean NOT NULL DEFAULT true,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row per fire. The key (schedule, fire time) makes each tick fire once, whichever
-- replica leads and however leadership moves; the action runs in the transaction that
-- inserts the row.
CREATE TABLE schedule_fires (
    schedule_id uuid NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    fire_time   timestamptz NOT NULL,
    fired_at    timestamptz NOT NULL DEFAULT now(),
    manual      boolean NOT NULL DEFAULT false,
    -- Which api-lite replica fired it (or the ops subject for a manual run).
    fired_by    text NOT NULL,
    affected    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (schedule_id, fire_time)
);

CREATE INDEX schedule_fires_latest ON schedule_fires (schedule_id, fire_time DESC) WHERE NOT manual;
