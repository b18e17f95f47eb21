//! Finds work that was accepted but is not moving: a job waiting on its queue long after
//! it (re-)entered it (its message was lost), or one whose worker's lease ran out long
//! ago (its message may be gone). Each goes back on its queue, or, when its worker died
//! on the message's last allowed receive, is recorded as dead-lettered (see
//! `shared::files` and `shared::executions`). Duplicates it may cause are harmless,
//! because every handler is idempotent.

use std::time::Duration;

use shared::lease::Stalled;
use shared::{executions, files};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Who the sweeper's transitions name as their author.
const SWEEPER: &str = "sweeper";
/// Jobs one pass looks at, per kind.
const BATCH: i64 = 100;

pub async fn run(
    pool: PgPool,
    requeue_after: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match sweep_once(&pool, requeue_after).await {
            Ok(0) => {}
            Ok(moved) => tracing::warn!(moved, "sweeper moved stalled files"),
            Err(error) => tracing::warn!(%error, "sweep failed"),
        }
        match sweep_executions_once(&pool, requeue_after).await {
            Ok(0) => {}
            Ok(moved) => tracing::warn!(moved, "sweeper moved stalled executions"),
            Err(error) => tracing::warn!(%error, "execution sweep failed"),
        }
        match fail_interrupted_tasks(&pool).await {
            Ok(0) => {}
            Ok(failed) => {
                tracing::warn!(failed, "marked redrive tasks of a stopped replica failed")
            }
            Err(error) => tracing::warn!(%error, "task sweep failed"),
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
