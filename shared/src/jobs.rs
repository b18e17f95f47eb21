//! Putting jobs back on their queues, shared by api-lite's routes, sweeper and ops
//! routes and by the schedules (fired by api-lite's leader or a worker's clock tick). Each function updates the row and writes the outbox entry in the
//! caller's transaction, so the job is enqueued if and only if the change commits.

use crate::outbox;
use crate::queue::{JobKind, JobMessage};
use sqlx::PgConnection;
use uuid::Uuid;

/// The statuses a file may be reprocessed from: finished one way or another.
pub const REPROCESSABLE_FILE_STATUSES: [&str; 3] = ["ready", "failed", "dead_lettered"];

/// Resets a finished file to `queued` with a clean slate and enqueues it. Its chunks
/// stay, and search keeps serving them, until the worker stores the new ones. Returns
/// false when the file is not in a reprocessable status (or not the org's).
pub async fn reprocess_file(
    connection: &mut PgConnection,
    file_id: Uuid,
    org_id: Uuid,
) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE files SET status = 'queued', queued_at = now(), updated_at = now(), attempts = 0, stage = NULL, \
         error_class = NULL, error_code = NULL, error_message = NULL, lease_token = NULL, lease_expires_at = NULL, finished_at = NULL \
         WHERE id = $1 AND org_id = $2 AND status = ANY($3)",
    )
    .bind(file_id)
    .bind(org_id)
    .bind(&REPROCESSABLE_FILE_STATUSES[..])
    .execute(&mut *connection)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    outbox::enqueue(
        connection,
        outbox::FILE_JOBS,
        &JobMessage::new(JobKind::FileProcess, file_id, org_id),
    )
    .await?;
    Ok(true)
}

/// Enqueues a job again: for work that was accepted but never started, or whose
/// worker's lease ran out. A job whose lease expired goes back to `queued` with the lease
/// cleared, which also fences out a worker that was only stalled. Duplicate messages are
/// harmless: handlers are idempotent.
pub async fn requeue_stalled(
    connection: &mut PgConnection,
    kind: JobKind,
    job_id: Uuid,
    org_id: Uuid,
) -> sqlx::Result<()> {
    let (statement, queue) = match kind {
        JobKind::FileProcess => (
            "UPDATE files SET queued_at = now(), updated_at = now(), lease_token = NULL, lease_expires_at = NULL, \
             status = CASE WHEN status = 'processing' THEN 'queued' ELSE status END, \
             stage = CASE WHEN status = 'processing' THEN NULL ELSE stage END WHERE id = $1",
            outbox::FILE_JOBS,
        ),
        JobKind::AgentRun => (
            "UPDATE executions SET queued_at = now(), updated_at = now(), lease_token = NULL, lease_expires_at = NULL, \
             status = CASE WHEN status = 'running' THEN 'queued' ELSE status END WHERE id = $1",
            outbox::AGENT_JOBS,
        ),
        // A clock tick has no row to requeue.
        JobKind::ScheduleTick => return Ok(()),
    };
    sqlx::query(statement)
        .bind(job_id)
        .execute(&mut *connection)
        .await?;
    outbox::enqueue(connection, queue, &JobMessage::new(kind, job_id, org_id)).await
}

/// Reopens a job whose message sat on a DLQ, before the message goes back to its queue:
/// a `dead_lettered` file, or an execution that failed with a transient error (the agent
/// worker marks dead-lettered executions `failed`). Returns whether a row was reopened.
pub async fn reopen_dead_lettered(
    connection: &mut PgConnection,
    kind: JobKind,
    job_id: Uuid,
    actor: &str,
) -> sqlx::Result<bool> {
    match kind {
        JobKind::FileProcess => {
            let updated = sqlx::query(
                "UPDATE files SET status = 'queued', queued_at = now(), updated_at = now(), attempts = 0, stage = NULL, \
                 error_class = NULL, error_code = NULL, error_message = NULL, finished_at = NULL \
                 WHERE id = $1 AND status = 'dead_lettered'",
            )
            .bind(job_id)
            .execute(&mut *connection)
            .await?;
            Ok(updated.rows_affected() > 0)
        }
        JobKind::AgentRun => {
            let updated = sqlx::query(
                "UPDATE executions SET status = 'queued', queued_at = now(), updated_at = now(), \
                 error_class = NULL, error_code = NULL, error_message = NULL, finished_at = NULL \
                 WHERE id = $1 AND status = 'failed' AND error_class = 'transient'",
            )
            .bind(job_id)
            .execute(&mut *connection)
            .await?;
            if updated.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO execution_events (execution_id, org_id, step, kind, data) \
                 SELECT id, org_id, step, 'redriven', jsonb_build_object('by', $2::text) FROM executions WHERE id = $1",
            )
            .bind(job_id)
            .bind(actor)
            .execute(&mut *connection)
            .await?;
            Ok(true)
        }
        JobKind::ScheduleTick => Ok(false),
    }
}

/// Appends one entry to the audit log in the caller's transaction, so the entry exists
/// if and only if the action committed: who, what, on what, how many.
pub async fn audit(
    connection: &mut PgConnection,
    actor: &str,
    action: &str,
    target: &str,
    count: i64,
    details: serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (actor, action, target, count, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(count.clamp(0, i32::MAX as i64) as i32)
    .bind(details)
    .execute(connection)
    .await?;
    tracing::info!(actor, action, target, count, "ops action");
    Ok(())
}
