//! Re-enqueues work that was accepted but never started: a file queued long ago whose
//! message was lost, or one whose worker died and whose message is gone. Duplicates it
//! may cause are harmless, because every handler is idempotent.
//!
//! It also removes abandoned uploads: a file created but never confirmed, once its
//! presigned URL has long expired, loses its row and whatever object was put.

use std::time::Duration;

use shared::aws::describe_sdk_error;
use shared::queue::JobKind;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use shared::jobs;

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
            Ok(requeued) => tracing::warn!(requeued, "sweeper re-enqueued stalled files"),
            Err(error) => tracing::warn!(%error, "sweep failed"),
        }
        match sweep_executions_once(pool, requeue_after).await {
            Ok(0) => {}
            Ok(requeued) => tracing::warn!(requeued, "sweeper re-enqueued stalled executions"),
            Err(error) => tracing::warn!(%error, "execution sweep failed"),
        }
        match fail_interrupted_tasks(pool).await {
            Ok(0) => {}
            Ok(failed) => {
                tracing::warn!(failed, "marked redrive tasks of a stopped replica failed")
            }
            Err(error) => tracing::warn!(%error, "task sweep failed"),
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

/// One pass; returns how many files were re-enqueued.
pub async fn sweep_once(pool: &PgPool, requeue_after: Duration) -> sqlx::Result<usize> {
    let mut transaction = pool.begin().await?;
    let stalled: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, org_id FROM files \
         WHERE (status = 'queued' AND queued_at < now() - make_interval(secs => $1)) \
            OR (status IN ('processing', 'retrying') AND lease_expires_at < now() - make_interval(secs => $1)) \
         ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    .bind(requeue_after.as_secs_f64())
    .fetch_all(&mut *transaction)
    .await?;
    for (file_id, org_id) in &stalled {
        jobs::requeue_stalled(&mut transaction, JobKind::FileProcess, *file_id, *org_id).await?;
    }
    transaction.commit().await?;
    Ok(stalled.len())
}

/// One pass over agent executions: queued ones nobody started, and running ones whose
/// worker's lease ran out long ago (its message may be gone). Parked runs (awaiting_input,
/// paused) are left alone: an answer or a resume enqueues them.
pub async fn sweep_executions_once(pool: &PgPool, requeue_after: Duration) -> sqlx::Result<usize> {
    let mut transaction = pool.begin().await?;
    let stalled: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT id, org_id FROM executions \
         WHERE (status = 'queued' AND queued_at < now() - make_interval(secs => $1)) \
            OR (status = 'running' AND lease_expires_at < now() - make_interval(secs => $1)) \
         ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    .bind(requeue_after.as_secs_f64())
    .fetch_all(&mut *transaction)
    .await?;
    for (execution_id, org_id) in &stalled {
        jobs::requeue_stalled(&mut transaction, JobKind::AgentRun, *execution_id, *org_id).await?;
    }
    transaction.commit().await?;
    Ok(stalled.len())
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
    let abandoned: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT id, object_key FROM files \
         WHERE status = 'awaiting_upload' AND created_at < now() - make_interval(secs => $1) \
         ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED",
    )
    .bind(sweeper.abandoned_upload_after.as_secs_f64())
    .fetch_all(&mut *transaction)
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
    let ids: Vec<Uuid> = abandoned.iter().map(|(id, _)| *id).collect();
    sqlx::query("DELETE FROM files WHERE id = ANY($1) AND status = 'awaiting_upload'")
        .bind(&ids)
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    Ok(abandoned.len())
}
