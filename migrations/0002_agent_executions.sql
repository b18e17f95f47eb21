-- Agent executions: nodes (the tasks), executions (one run of an agent on a node), their
-- per-step checkpoint deltas, trace events, human inputs and approvals, and the tool
-- ledger that keeps tool side effects exactly-once across crashes.

CREATE TABLE nodes (
    id           uuid PRIMARY KEY,
    org_id       uuid NOT NULL,
    parent_id    uuid REFERENCES nodes (id) ON DELETE CASCADE,
    title        text NOT NULL,
    instructions text NOT NULL,
    inputs       jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Set by the write_output tool, one key per output.
    outputs      jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX nodes_org_parent ON nodes (org_id, parent_id);

CREATE TABLE executions (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL,
    node_id          uuid NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    -- The caller's Idempotency-Key: the same key gives the same execution.
    idempotency_key  text,
    model            text NOT NULL,
    -- Limits asked for by the caller; the worker fills the gaps with its defaults.
    budget           jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'awaiting_input', 'paused', 'completed', 'failed', 'cancelled')),
    -- A control request the running worker honours: pause between steps, cancel at once.
    control          text CHECK (control IN ('pause', 'cancel')),
    -- Committed steps; the next step to run has this number.
    step             integer NOT NULL DEFAULT 0,
    tokens_in        bigint NOT NULL DEFAULT 0,
    tokens_out       bigint NOT NULL DEFAULT 0,
    cost_usd         double precision NOT NULL DEFAULT 0,
    -- Time spent running steps (not waiting for people), for the wall-time budget.
    active_ms        bigint NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    result           text,
    error_class      text,
    error_code       text,
    error_message    text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    queued_at        timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    UNIQUE (org_id, idempotency_key)
);

CREATE INDEX executions_org_node ON executions (org_id, node_id, created_at DESC);
CREATE INDEX executions_finished ON executions (finished_at) WHERE finished_at IS NOT NULL;

-- The checkpoint, as deltas: each row holds only the messages its step added, so storage
-- grows linearly with the number of steps. The state is the concatenation in step order.
CREATE TABLE execution_steps (
    execution_id uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step         integer NOT NULL,
    messages     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (execution_id, step)
);

-- The trace: model calls, tool calls and results, questions, answers, control changes.
-- The id orders events; it doubles as the SSE event id.
CREATE TABLE execution_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    execution_id uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    org_id       uuid NOT NULL,
    step         integer,
    kind         text NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX execution_events_by_execution ON execution_events (execution_id, id);

-- Questions for a person (ask_human) and tool calls held for approval.
CREATE TABLE execution_inputs (
    id           uuid PRIMARY KEY,
    execution_id uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    org_id       uuid NOT NULL,
    step         integer NOT NULL,
    tool_call_id text NOT NULL,
    -- The call's position in its step: with the step it makes the tool idempotency key.
    call_index   integer NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('question', 'approval')),
    tool         text NOT NULL,
    arguments    jsonb NOT NULL DEFAULT '{}'::jsonb,
    question     text,
    status       text NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'answered', 'approved', 'rejected', 'consumed', 'cancelled')),
    answer       text,
    answered_by  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    answered_at  timestamptz,
    UNIQUE (execution_id, tool_call_id)
);

CREATE INDEX execution_inputs_open ON execution_inputs (execution_id) WHERE status IN ('pending', 'answered', 'approved', 'rejected');

-- The tool ledger: one row per tool call, keyed by (execution, step, call index). A row
-- left 'started' after a crash means the outcome is unknown; only idempotent tools run
-- again. `runs` counts how often the tool body actually ran.
CREATE TABLE tool_calls (
    idempotency_key text PRIMARY KEY,
    execution_id    uuid NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step            integer NOT NULL,
    call_index      integer NOT NULL,
    tool            text NOT NULL,
    arguments       jsonb NOT NULL,
    status          text NOT NULL CHECK (status IN ('started', 'succeeded', 'failed')),
    result          jsonb,
    runs            integer NOT NULL DEFAULT 1,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);

CREATE INDEX tool_calls_by_execution ON tool_calls (execution_id, step, call_index);
