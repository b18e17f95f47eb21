//! Finds work that was accepted but is not moving: a job waiting on its queue long after
//! it (re-)entered it (its message was lost), or one whose worker's lease ran out long
//! ago (its message may be gone). Each goes back on its queue, or, when its worker died
//! on the message's last allowed receive, is recorded as dead-lettered (see
//! `shared::files` and `shared::executions`). Duplicates it may cause are harmless,
//! because every handler is idempotent.
//!
//! It also removes abandoned uploads: a file created but never confirmed, once its
//! presigned URL has long expired, loses its row and whatever object was put; and the
//! expired watches of live event streams.

use std::time::Duration;

use shared::aws::describe_sdk_error;

use shared::lease::Stalled;
use shared::{executions, files};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Who the sweeper's transitions name as their author.
const SWEEPER: &str = "sweeper";
/// Jobs one pass looks at, per kind.
const BATCH: i64 = 100;

/// What the sweeper works on.
pub struct Sweeper {
    pub pool: PgPool,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    /// Stalled work is re-enqueued after this long.
    pub requeue_after: Duration,
    /// Uploads still unconfirmed this long after creation are removed (the presign
    /// expiry plus a grace).
    pub abandoned_upload_after: Duration,
}

pub async fn run(sweeper: Sweeper, interval: Duration, shutdown: CancellationToken) {
    let pool = &sweeper.pool;
    let requeue_after = sweeper.requeue_after;
    loop {
        match sweep_once(pool, requeue_after).await {
            Ok(0) => {}
            Ok(moved) => tracing::warn!(moved, "sweeper moved stalled files"),
            Err(error) => tracing::warn!(%error, "sweep failed"),
        }
        match sweep_executions_once(pool, requeue_after).await {
            Ok(0) => {}
            Ok(moved) => tracing::warn!(moved, "sweeper moved stalled executions"),
            Err(error) => tracing::warn!(%error, "execution sweep failed"),
        }
        match fail_interrupted_tasks(pool).await {
            Ok(0) => {}
            Ok(failed) => {
                tracing::warn!(failed, "marked redrive tasks of a stopped replica failed")
            }
            Err(error) => tracing::warn!(%error, "task sweep failed"),
        }
        if let Err(error) = crate::live::forget_expired_watches(pool).await {
            tracing::warn!(%error, "expired live-stream watch sweep failed");
        }
        match remove_abandoned_uploads(&sweeper).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "sweeper removed abandoned uploads"),
            Err(error) => tracing::warn!(%error, "abandoned upload sweep failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass over files; returns how many were re-enqueued or dead-lettered.
pub async fn sweep_once(pool: &PgPool, requeue_after: Duration) -> sqlx::Result<usize> {
    let mut transaction = pool.begin().await?;
    let mut moved = 0;
    for file_id in files::lock_stalled(&mut transaction, requeue_after, BATCH).await? {
        if files::requeue_stalled(&mut transaction, file_id, SWEEPER).await? != Stalled::NotStalled
        {
            moved += 1;
        }
    }
    transaction.commit().await?;
    Ok(moved)
}

/// One pass over agent executions; returns how many were re-enqueued or dead-lettered.
/// Parked runs (awaiting_input, paused) are left alone: an answer or a resume enqueues
/// them.
pub async fn sweep_executions_once(pool: &PgPool, requeue_after: Duration) -> sqlx::Result<usize> {
    let mut transaction = pool.begin().await?;
    let mut moved = 0;
    for execution_id in executions::lock_stalled(&mut transaction, requeue_after, BATCH).await? {
        if executions::requeue_stalled(&mut transaction, execution_id, SWEEPER).await?
            != Stalled::NotStalled
        {
            moved += 1;
        }
    }
    transaction.commit().await?;
    Ok(moved)
}

/// Redrive tasks whose replica stopped mid-way stop updating; after two minutes of
/// silence they are marked failed so ops can see it and redrive again (moving a message
/// twice is harmless, losing one is impossible: it stays on the DLQ until sent).
pub async fn fail_interrupted_tasks(pool: &PgPool) -> sqlx::Result<u64> {
    let updated = sqlx::query(
        "UPDATE ops_tasks SET status = 'failed', error = 'the api-lite replica running it stopped; run the redrive again',          finished_at = now(), updated_at = now() WHERE status = 'running' AND updated_at < now() - interval '2 minutes'",
    )
    .execute(pool)
    .await?;
    Ok(updated.rows_affected())
}

/// Why abandoned uploads could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum UploadSweepError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("s3 delete_object: {0}")]
    Storage(String),
}

/// One pass over uploads never confirmed: each row is locked, its object deleted (a
/// missing object is fine), then the row, in one transaction. A confirm that comes at
/// the same moment waits for the lock and then finds no file; a failed S3 delete leaves
/// the row for the next pass. Returns how many were removed.
pub async fn remove_abandoned_uploads(sweeper: &Sweeper) -> Result<usize, UploadSweepError> {
    let mut transaction = sweeper.pool.begin().await?;
    let abandoned =
        files::lock_abandoned_uploads(&mut transaction, sweeper.abandoned_upload_after, BATCH)
            .await?;
    for (_, object_key) in &abandoned {
        sweeper
            .s3
            .delete_object()
            .bucket(&sweeper.bucket)
            .key(object_key)
            .send()
            .await
            .map_err(|error| UploadSweepError::Storage(describe_sdk_error(&error)))?;
    }
    let ids: Vec<_> = abandoned.iter().map(|(id, _)| *id).collect();
    files::delete_abandoned_uploads(&mut transaction, &ids).await?;
    transaction.commit().await?;
    Ok(abandoned.len())
}
