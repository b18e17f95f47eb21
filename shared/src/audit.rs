//! The audit log: every ops action (redrive, discard, requeue, schedule change and fire)
//! with who, when, what and how many, written in the action's own transaction.

use sqlx::PgConnection;

/// Appends one entry to the audit log in the caller's transaction, so the entry exists
/// if and only if the action committed: who, what, on what, how many.
pub async fn record(
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
