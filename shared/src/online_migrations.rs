//! The schema steps a migration cannot take without blocking ingestion: batched
//! backfills and indexes built with `CREATE INDEX CONCURRENTLY` (which refuses to run in
//! a transaction, and so in a sqlx migration file; see `migrations/0008_*.sql`).
//!
//! [`run`] is idempotent and safe to run on a live fleet from several replicas at once:
//! one session-level advisory lock lets one of them work while the others return at
//! once. Each backfill batch is its own short transaction that skips rows a worker holds;
//! an index a previous run left invalid (a crash mid-build) is dropped and built again.

use sqlx::PgPool;
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};

use crate::search::TEXT_SEARCH_CONFIG;

/// The advisory lock key of the online steps ("gbonline" in ASCII).
pub const ADVISORY_LOCK_KEY: i64 = 0x6762_6f6e_6c69_6e65;

/// Chunks per backfill transaction: small enough that a batch holds its row locks for
/// milliseconds, large enough that a million chunks take minutes, not hours.
const BACKFILL_BATCH: i64 = 2_000;

/// The indexes, by name, with the statement that builds each (without `CONCURRENTLY IF
/// NOT EXISTS`, which [`ensure_index`] adds). A closed set: nothing here comes from input.
const INDEXES: [(&str, &str); 3] = [
    // Full-text search within an org: btree_gin puts the org next to the lexemes.
    (
        "chunks_search_vector",
        "ON chunks USING gin (org_id, search_vector)",
    ),
    // Metadata equality and `in` filters (`@>`) within an org.
    (
        "files_org_metadata",
        "ON files USING gin (org_id, metadata jsonb_path_ops)",
    ),
    // Name-prefix filters: a byte-order range on the C collation (see `file_filter`).
    ("files_org_name", "ON files (org_id, name COLLATE \"C\")"),
];

/// What one [`run`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OnlineReport {
    /// Another replica held the lock, so this one did nothing.
    pub skipped: bool,
    pub chunks_backfilled: u64,
    pub indexes_built: Vec<String>,
}

/// Backfills `chunks.search_vector` and builds the missing indexes.
pub async fn run(pool: &PgPool) -> sqlx::Result<OnlineReport> {
    // A session lock lives on one connection: keep that connection for the whole run.
    let mut connection = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(ADVISORY_LOCK_KEY)
        .fetch_one(&mut *connection)
        .await?;
    if !locked {
        tracing::info!("online migrations already running elsewhere");
        return Ok(OnlineReport {
            skipped: true,
            ..OnlineReport::default()
        });
    }
    let outcome = run_locked(&mut connection).await;
    // Unlock on success and failure alike; a dropped connection unlocks too.
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(ADVISORY_LOCK_KEY)
        .execute(&mut *connection)
        .await?;
    outcome
}

async fn run_locked(connection: &mut PoolConnection<Postgres>) -> sqlx::Result<OnlineReport> {
    let mut report = OnlineReport {
        chunks_backfilled: backfill_search_vectors(connection).await?,
        ..OnlineReport::default()
    };
    for (name, definition) in INDEXES {
        if ensure_index(connection, name, definition).await? {
            report.indexes_built.push(name.to_string());
        }
    }
    if report.chunks_backfilled > 0 || !report.indexes_built.is_empty() {
        tracing::info!(
            chunks_backfilled = report.chunks_backfilled,
            indexes_built = ?report.indexes_built,
            "online migrations done"
        );
    }
    Ok(report)
}

/// Fills `search_vector` of chunks stored before the trigger existed, in id order, one
/// short transaction per batch; rows a worker is writing are skipped now and picked up
/// by the next run (or by the trigger, which fills them on their next write).
async fn backfill_search_vectors(connection: &mut PoolConnection<Postgres>) -> sqlx::Result<u64> {
    let statement = format!(
        "WITH batch AS ( \
             SELECT id FROM chunks WHERE search_vector IS NULL AND id > $1 \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
         UPDATE chunks SET search_vector = to_tsvector('{TEXT_SEARCH_CONFIG}', chunks.text) \
         FROM batch WHERE chunks.id = batch.id RETURNING chunks.id"
    );
    let mut after_id = 0_i64;
    let mut backfilled = 0_u64;
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(&statement)
            .bind(after_id)
            .bind(BACKFILL_BATCH)
            .fetch_all(&mut **connection)
            .await?;
        let Some(last) = ids.iter().max() else {
            return Ok(backfilled);
        };
        after_id = *last;
        backfilled += ids.len() as u64;
    }
}

/// Builds the index unless a valid one exists; returns whether it built one.
async fn ensure_index(
    connection: &mut PoolConnection<Postgres>,
    name: &str,
    definition: &str,
) -> sqlx::Result<bool> {
    let existing = sqlx::query(
        "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid \
         WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace",
    )
    .bind(name)
    .fetch_optional(&mut **connection)
    .await?;
    match existing.map(|row| row.get::<bool, _>("indisvalid")) {
        Some(true) => return Ok(false),
        Some(false) => {
            tracing::warn!(
                index = name,
                "dropping an invalid index left by an interrupted build"
            );
            sqlx::query(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                .execute(&mut **connection)
                .await?;
        }
        None => {}
    }
    sqlx::query(&format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}"
    ))
    .execute(&mut **connection)
    .await?;
    Ok(true)
}
