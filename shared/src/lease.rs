//! Fenced leases on job rows.
//!
//! A worker owns a job only while the row's `lease_token` is the token it was given at
//! claim time. Every write a worker makes is conditioned on that token, so a worker that
//! lost its lease (crashed and came back, was paused, got a duplicate delivery) cannot
//! write. Claiming is a transition of each job kind's lifecycle ([`crate::files::claim`],
//! [`crate::executions::claim`]); renewing, fencing and reading a claim that took nothing
//! are the same for every kind, and live here.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::executions::ExecutionStatus;
use crate::files::FileStatus;

/// The message a claim comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt<'a> {
    /// SQS's id of the message: the same on every receive of one message, another for a
    /// duplicate. The lease records it, so a claim can tell the holder's own message
    /// coming back from a second message of the same job.
    pub message_id: &'a str,
    /// The message is on its last allowed receive: should the lease then run out with no
    /// outcome recorded, SQS has dead-lettered it, and the row must say so rather than be
    /// retried.
    pub last_receive: bool,
}

/// What claiming a job found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This worker now owns the job under `lease` (fenced: writes check it).
    Acquired { lease: Uuid, attempt: u32 },
    /// Another worker holds a live lease, and this is a different message of the same
    /// job: a duplicate. The holder finishes the job or hands its own message back, so
    /// the duplicate can go.
    Duplicate,
    /// The lease holder's own message came back while its lease is still live (the
    /// holder stalled, died, or could not record its outcome): look again once the
    /// lease has run out.
    Busy { retry_after: Duration },
    /// Nothing left to do (already done, failed for good, parked, deleted or unknown).
    Finished,
}

/// What putting a stalled job back on its queue did with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stalled {
    /// Back on the queue with a fresh message.
    Requeued,
    /// Its worker died on the message's last allowed receive: SQS dead-lettered the
    /// message, and the row now says so.
    DeadLettered,
    /// Not stalled (finished, parked, leased by a live worker, or gone): left alone.
    NotStalled,
}

/// The error code of a job whose worker, on the message's last allowed receive, stopped
/// without recording an outcome.
pub const LAST_ATTEMPT_LOST: &str = "last_attempt_lost";

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
            Self::Files => FileStatus::Processing.as_str(),
            Self::Executions => ExecutionStatus::Running.as_str(),
        }
    }
}

/// What a claim that took no lease found: another worker's live lease (taken with this
/// message, or with another one), or nothing left to do (finished, parked, deleted or
/// unknown).
pub async fn claim_not_taken(
    pool: &PgPool,
    table: LeasedTable,
    id: Uuid,
    org_id: Uuid,
    receipt: Receipt<'_>,
) -> sqlx::Result<Claim> {
    let statement = format!(
        "SELECT lease_message_id IS NOT DISTINCT FROM $4, extract(epoch FROM lease_expires_at - now())::float8 \
         FROM {} WHERE id = $1 AND org_id = $2 AND status = $3 AND lease_expires_at > now()",
        table.name()
    );
    let leased: Option<(bool, f64)> = sqlx::query_as(&statement)
        .bind(id)
        .bind(org_id)
        .bind(table.leased_status())
        .bind(receipt.message_id)
        .fetch_optional(pool)
        .await?;
    Ok(match leased {
        Some((true, remaining)) => Claim::Busy {
            retry_after: Duration::from_secs_f64(remaining.max(0.0) + 1.0)
                .min(Duration::from_secs(900)),
        },
        Some((false, _)) => Claim::Duplicate,
        None => Claim::Finished,
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
