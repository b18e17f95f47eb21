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

    /// The status a row has while a worker holds its lease.
    fn leased_status(self) -> &'static str {
        match self {
            Self::Files => "processing",
            Self::Executions => "running",
        }
    }
}

/// What a claim that took no lease found: another worker's live lease (look again once
/// it runs out), or nothing left to do (finished, parked, deleted or unknown).
pub async fn claim_not_taken(
    pool: &PgPool,
    table: LeasedTable,
    id: Uuid,
    org_id: Uuid,
) -> sqlx::Result<crate::worker::Claim> {
    let statement = format!(
        "SELECT status, extract(epoch FROM lease_expires_at - now())::float8 FROM {} WHERE id = $1 AND org_id = $2",
        table.name()
    );
    let current: Option<(String, Option<f64>)> = sqlx::query_as(&statement)
        .bind(id)
        .bind(org_id)
        .fetch_optional(pool)
        .await?;
    Ok(match current {
        Some((status, Some(remaining))) if status == table.leased_status() => {
            crate::worker::Claim::Busy {
                retry_after: Duration::from_secs_f64(remaining.max(0.0) + 1.0)
                    .min(Duration::from_secs(900)),
            }
        }
        _ => crate::worker::Claim::Finished,
    })
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
