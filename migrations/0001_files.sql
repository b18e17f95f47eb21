-- Files, their chunks and vectors, and the transactional outbox.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE files (
    id                 uuid PRIMARY KEY,
    org_id             uuid NOT NULL,
    name               text NOT NULL,
    content_type       text NOT NULL,
    size_bytes         bigint NOT NULL CHECK (size_bytes >= 0),
    object_key         text NOT NULL,
    status             text NOT NULL DEFAULT 'awaiting_upload'
                       CHECK (status IN ('awaiting_upload', 'queued', 'processing', 'retrying', 'ready', 'failed', 'dead_lettered')),
    -- The stage running now, or the one that failed: download, extract, chunk, embed, store.
    stage              text,
    attempts           integer NOT NULL DEFAULT 0,
    error_class        text CHECK (error_class IN ('permanent', 'transient')),
    error_code         text,
    error_message      text,
    detected_type      text,
    pages              integer,
    chunk_count        integer,
    -- The model of the chunks search serves for this file; a re-embed switches it in the
    -- same transaction that stores the new chunks.
    embedding_model    text,
    extractor_version  integer,
    content_sha256     text,
    -- Milliseconds per stage of the latest attempt, e.g. {"download": 12, "extract": 80}.
    stage_durations_ms jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- Fenced lease: a worker writes only while lease_token is the one it claimed with.
    lease_token        uuid,
    lease_expires_at   timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    queued_at          timestamptz,
    started_at         timestamptz,
    finished_at        timestamptz
);

CREATE INDEX files_org_created ON files (org_id, created_at DESC, id DESC);
CREATE INDEX files_org_status ON files (org_id, status);
-- The sweeper looks for work that was accepted but never started.
CREATE INDEX files_queued ON files (queued_at) WHERE status = 'queued';

-- Chunks of several embedding models live side by side: the vector column is untyped,
-- and each model gets a partial HNSW index on its own dimension (created by the fleet
-- for models other than the default, see shared::embed). A new model can backfill while
-- the old one keeps serving search.
CREATE TABLE chunks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org_id       uuid NOT NULL,
    file_id      uuid NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    model_id     text NOT NULL,
    chunk_index  integer NOT NULL,
    page         integer,
    byte_start   integer NOT NULL,
    byte_end     integer NOT NULL,
    token_count  integer NOT NULL,
    -- sha256 of the text: identical content is embedded once per org and model.
    text_sha256  bytea NOT NULL,
    text         text NOT NULL,
    embedding    vector NOT NULL,
    UNIQUE (file_id, model_id, chunk_index)
);

CREATE INDEX chunks_reuse ON chunks (org_id, model_id, text_sha256);
CREATE INDEX chunks_hnsw_all_minilm_l6_v2 ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE model_id = 'all-minilm-l6-v2';

CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Logical queue name (file-jobs, agent-jobs), mapped to a URL by the relay.
    queue        text NOT NULL,
    body         text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX outbox_due ON outbox (available_at, id);
