//! Re-enqueues work that was accepted but never started: a file queued long ago whose
//! message was lost, or one whose worker died and whose message is gone. Duplicates it
//! may cause are harmless, because every handler is idempotent.

use std::time::Duration;

use shared::queue::JobKind;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use shared::jobs;

pub async fn run(
    pool: PgPool,
    requeue_after: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match sweep_once(&pool, requeue_after).await {
            Ok(0) => {}
            Ok(requeued) => tracing::warn!(requeued, "sweeper re-enqueued stalled files"),
            Err(error) => tracing::warn!(%error, "sweep failed"),
        }
        match sweep_executions_once(&pool, requeue_after).await {
            Ok(0) => {}
            Ok(requeued) => tracing::warn!(requeued, "sweeper re-enqueued stalled executions"),
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
