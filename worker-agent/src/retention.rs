//! Checkpoint retention: the step deltas of executions that finished long ago are
//! deleted (the execution row, its trace and its outputs stay).

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Deletes the checkpoints of executions finished more than `retention` ago; returns
/// how many step rows went.
pub async fn purge_once(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM execution_steps s USING executions e \
         WHERE s.execution_id = e.id AND e.finished_at < now() - make_interval(secs => $1) \
           AND e.status IN ('completed', 'failed', 'cancelled')",
    )
    .bind(retention.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(deleted.rows_affected())
}

/// Purges every `interval` until `shutdown`. Several workers may run it at once: the
/// DELETE is idempotent.
pub async fn run(
    pool: PgPool,
    retention: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match purge_once(&pool, retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "old checkpoints deleted"),
            Err(error) => tracing::warn!(%error, "checkpoint retention failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
