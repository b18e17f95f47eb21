-- Webhooks (issue 13): per-org endpoints and durable deliveries, written by
-- shared::files and shared::executions in the transaction of the state change they
-- announce; and a version on nodes for optimistic locking.

CREATE TABLE webhook_endpoints (
    id                         uuid PRIMARY KEY,
    org_id                     uuid NOT NULL,
    url                        text NOT NULL,
    -- file.ready, file.failed, file.dead_lettered, execution.awaiting_input,
    -- execution.completed, execution.failed, execution.cancelled
    event_types                text[] NOT NULL,
    -- The Standard Webhooks signing secret (whsec_ + base64). It signs, so it is kept;
    -- the API shows it once, at creation and at rotation.
    secret                     text NOT NULL,
    -- After a rotation the old secret signs too (a second signature) until it expires.
    previous_secret            text,
    previous_secret_expires_at timestamptz,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_endpoints_org ON webhook_endpoints (org_id);

-- One row per (event, endpoint). event_id is the webhook-id header: the same on every
-- attempt and redelivery, so receivers dedupe on it.
CREATE TABLE webhook_deliveries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id          text NOT NULL,
    endpoint_id       uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    org_id            uuid NOT NULL,
    event_type        text NOT NULL,
    payload           jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    -- Retries stop (failed) once the retry window since this time has passed; a
    -- redelivery starts a new window.
    window_started_at timestamptz NOT NULL DEFAULT now(),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_status_code  integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    failed_at         timestamptz,
    UNIQUE (endpoint_id, event_id)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (failed_at DESC) WHERE status = 'failed';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id DESC);

-- Optimistic locking: PATCH /v1/nodes/{id} names the version it read (If-Match or a
-- version field) and is refused with 409 when the node moved on.
ALTER TABLE nodes ADD COLUMN version integer NOT NULL DEFAULT 1;
