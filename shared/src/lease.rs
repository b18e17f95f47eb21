//! Fenced leases on job rows.
//!
//! A worker owns a job only while the row's `lease_token` is the token it was given at
//! claim time. Every write a worker makes is conditioned on that token, so a worker that
//! lost its lease (crashed and came back, was paused, got a duplicate delivery) cannot
//! write. Claiming is table-specific (which statuses may be claimed), so it lives with
//! each handler; renewing, fencing and releasing are the same everywhere.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The tables that carry leases. The name is a closed set, never user input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasedTable {
    Files,
    Executions,
}

impl LeasedTable {
    fn name(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Executions => "executions",
        }
    }
}

/// Extends the lease; false when the token is no longer current.
pub async fn renew(
    pool: &PgPool,
    table: LeasedTable,
    id: Uuid,
    token: Uuid,
    length: Duration,
) -> sqlx::Result<bool> {
    let statement = format!(
        "UPDATE {} SET lease_expires_at = now() + make_interval(secs => $3) WHERE id = $1 AND lease_token = $2",
        table.name()
    );
    let result = sqlx::query(&statement)
        .bind(id)
        .bind(token)
        .bind(length.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Locks the row for the rest of the transaction if, and only if, the lease is still
/// ours. Call it first in every transaction that writes on behalf of a job.
pub async fn fence(
    connection: &mut PgConnection,
    table: LeasedTable,
    id: Uuid,
    token: Uuid,
) -> sqlx::Result<bool> {
    let statement = format!(
        "SELECT 1 FROM {} WHERE id = $1 AND lease_token = $2 FOR UPDATE",
        table.name()
    );
    let row = sqlx::query(&statement)
        .bind(id)
        .bind(token)
        .fetch_optional(connection)
        .await?;
    Ok(row.is_some())
}
