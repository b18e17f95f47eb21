-- Hybrid search (full-text over chunks) and user metadata on files (issue 14).
--
-- Only the quick, catalog-only half is here, so the fleet keeps ingesting while it runs:
--
-- * `chunks.search_vector` is a plain nullable column filled by a trigger, not a
--   `GENERATED ... STORED` column: adding a stored generated column rewrites the whole
--   chunks table under an ACCESS EXCLUSIVE lock (every COPY of every worker waits for
--   it), while adding a nullable column only touches the catalog.
-- * `files.metadata` gets a constant default, which Postgres 11+ stores in the catalog
--   without rewriting the table; its CHECK is NOT VALID, so adding it scans nothing
--   (new and updated rows are checked all the same).
-- * lock_timeout: if a long transaction holds these tables, this migration gives up after
--   a few seconds instead of queueing its lock in front of every worker's writes; the
--   deploy fails and is simply retried.
--
-- The slow half cannot run in a migration: the batched backfill of `search_vector` for
-- chunks stored before this migration, and the GIN and B-tree indexes, which are built
-- with CREATE INDEX CONCURRENTLY (no lock that blocks writes). CONCURRENTLY refuses to run
-- inside a transaction, and sqlx sends a migration file as one multi-statement query,
-- which Postgres runs as one implicit transaction even for a `-- no-transaction`
-- migration. So `shared::online_migrations` does it, right after the migrations: to
-- completion in `api-lite migrate`, in the background when api-lite starts (one replica
-- at a time, under an advisory lock). Until it is done, search is complete for vectors
-- and for text of new chunks, just slower on text and filters; see migrations/README.md.
SET LOCAL lock_timeout = '5s';

-- Lets one GIN index hold the org next to the lexemes or the metadata, so a text search
-- or a metadata filter reads only the caller's org's postings. Trusted since Postgres 13:
-- a database owner may create it.
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- User metadata: a JSON object set at create time and patchable (the API checks its size
-- and depth); search and the file list filter on its top-level keys.
ALTER TABLE files ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE files ADD CONSTRAINT files_metadata_is_object
    CHECK (jsonb_typeof(metadata) = 'object') NOT VALID;

-- The chunk's text as English lexemes (stemmed, stop words dropped), for full-text search.
-- The text search configuration must be the one search builds its queries with
-- (`shared::search::TEXT_SEARCH_CONFIG`).
ALTER TABLE chunks ADD COLUMN search_vector tsvector;

CREATE FUNCTION chunks_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_vector := to_tsvector('english', NEW.text);
    RETURN NEW;
END
$$;

-- Fires for the workers' binary COPY as for INSERT.
CREATE TRIGGER chunks_search_vector BEFORE INSERT OR UPDATE OF text ON chunks
    FOR EACH ROW EXECUTE FUNCTION chunks_search_vector();
