//! The execution lifecycle: every status an agent execution can have and every
//! transition between them, each with its event row (`execution_events`, the run's
//! trace) and, when it puts the run on the queue, its outbox entry, in the caller's
//! transaction.
//!
//! | transition | from | to | new message |
//! |---|---|---|---|
//! | [`create`] | | `queued` | yes |
//! | [`claim`] | `queued`, `running` (lease run out), `failed` (dead-lettered) | `running` | |
//! | [`step::commit_step`] | `running` | `running`, `awaiting_input`, `completed` | |
//! | [`step::park`] | `running` | `paused`, `awaiting_input` | |
//! | [`step::finish_cancelled`] | `running` | `cancelled` | |
//! | [`step::release_at_boundary`] | `running` | `queued` | yes |
//! | [`release`] | `running` | `queued` | its own, made visible |
//! | [`record_failure`] | `running` | `failed`, `queued` (retrying), `failed` (dead-lettered) | |
//! | [`requeue_stalled`] | `queued`, `running` (lease run out) | `queued`; `failed` after a lost last attempt | yes; none |
//! | [`reopen_dead_lettered`] | `failed` (dead-lettered) | `queued` | the one moved back |
//! | [`control::pause`] | `queued` | `paused` (a running run is asked) | |
//! | [`control::resume`] | `paused` | `queued` | yes |
//! | [`control::cancel`] | an unfinished run no live worker holds | `cancelled` (a running run is asked) | |
//! | [`control::answer`], [`control::decide`] | `awaiting_input`, the last input pending | `queued` | yes |
//!
//! Routes, the worker, the sweeper and ops call these functions and write no status SQL
//! of their own. Every transition goes through one private function, `record`, which
//! writes the event row and the outbox entry: a side row every transition needs (a
//! webhook, say) is added there.
//!
//! A dead-lettered execution is `failed` with error class `transient` (its message went
//! to the DLQ after `maxReceiveCount`). A message that comes back from the DLQ, moved by
//! ops or by any other tool, reopens it at claim time.
//!
//! # Layout
//! - this module: statuses, transitions, claims, failures, the sweeper's and ops' views.
//! - [`step`]: what the worker writes during a run (model calls, step commits, parking).
//! - [`control`]: pause, resume, cancel, answers and approvals from the API.
//! - [`budget`]: budgets clamped to the server's ceiling, the model allowlist.

/// Budgets, their ceiling, and the models a run may use.
pub mod budget;
/// Pause, resume, cancel, answers and approvals.
pub mod control;
/// The worker's writes during a run.
pub mod step;

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::JobError;
use crate::lease::{self, Claim, LAST_ATTEMPT_LOST, LeasedTable, Receipt, Stalled};
use crate::outbox;
use crate::queue::JobKind;
use crate::worker::Disposition;

/// An execution's status; mirrors the CHECK list of `executions.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionStatus {
    Queued,
    Running,
    AwaitingInput,
    Paused,
    Completed,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 7] = [
        Self::Queued,
        Self::Running,
        Self::AwaitingInput,
        Self::Paused,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::AwaitingInput => "awaiting_input",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// Every status name, as the API lists them.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.map(Self::as_str).to_vec()
    }

    /// The run is over: nothing moves it again but a redrive of a dead-lettered one.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// What happened to an execution; the `kind` of its trace event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Created and enqueued.
    Queued,
    /// A worker took it.
    Claimed,
    /// Its message came back from the DLQ: the dead-lettered run is reopened.
    Redriven,
    /// Stopped between steps on request.
    Paused,
    /// Parked until a person answers or decides.
    AwaitingInput,
    /// A paused run back on the queue.
    Resumed,
    /// The last pending question was answered: back on the queue.
    Answered,
    /// The last pending approval was granted: back on the queue.
    Approved,
    /// The last pending approval was refused: back on the queue.
    Rejected,
    Completed,
    /// A permanent error (budget, policy, a model that refuses the request).
    Failed,
    /// A transient error: the message comes back after a backoff.
    Retrying,
    /// SQS gave up on it (the last allowed receive failed, or ended with no outcome).
    DeadLettered,
    Cancelled,
    /// A worker gave it back unfinished: at a step boundary with a fresh message
    /// (`enqueue`), or at the shutdown deadline with its own message made visible.
    Released {
        enqueue: bool,
    },
    /// Put back on the queue by the sweeper or ops: its message was lost or its worker died.
    Requeued,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Claimed => "claimed",
            Self::Redriven => "redriven",
            Self::Paused => "paused",
            Self::AwaitingInput => "awaiting_input",
            Self::Resumed => "resumed",
            Self::Answered => "human_input",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
            Self::DeadLettered => "dead_lettered",
            Self::Cancelled => "cancelled",
            Self::Released { .. } => "released",
            Self::Requeued => "requeued",
        }
    }

    /// Whether the transition puts a new message on the queue (through the outbox).
    fn enqueues(self) -> bool {
        match self {
            Self::Queued
            | Self::Resumed
            | Self::Answered
            | Self::Approved
            | Self::Rejected
            | Self::Requeued => true,
            Self::Released { enqueue } => enqueue,
            _ => false,
        }
    }
}

/// The execution a transition happened to, as its statement returned it.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Moved {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The step the run is at, which the event is filed under.
    pub step: i32,
}

/// Writes the transition's event row and, when it enqueues, its outbox entry, in the
/// transaction that changed the row. Every transition passes through here.
async fn record(
    connection: &mut PgConnection,
    execution: Moved,
    transition: Transition,
    data: Value,
) -> sqlx::Result<()> {
    append_events(
        connection,
        execution,
        &[(transition.as_str().to_string(), data)],
    )
    .await?;
    if transition.enqueues() {
        outbox::enqueue_job(
            connection,
            JobKind::AgentRun,
            execution.id,
            execution.org_id,
        )
        .await?;
    }
    Ok(())
}

/// Appends trace events, in order, filed under `execution.step`.
async fn append_events(
    connection: &mut PgConnection,
    execution: Moved,
    events: &[(String, Value)],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let kinds: Vec<&str> = events.iter().map(|(kind, _)| kind.as_str()).collect();
    let data: Vec<Value> = events.iter().map(|(_, data)| data.clone()).collect();
    sqlx::query(
        "INSERT INTO execution_events (execution_id, org_id, step, kind, data) \
         SELECT $1, $2, $3, event.kind, event.data FROM UNNEST($4::text[], $5::jsonb[]) WITH ORDINALITY AS event(kind, data, position) ORDER BY event.position",
    )
    .bind(execution.id)
    .bind(execution.org_id)
    .bind(execution.step)
    .bind(&kinds)
    .bind(&data)
    .execute(connection)
    .await?;
    Ok(())
}

/// An execution as `POST /v1/nodes/{id}/execute` creates it.
#[derive(Debug, Clone)]
pub struct NewExecution<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub node_id: Uuid,
    pub idempotency_key: Option<&'a str>,
    pub model: &'a str,
    /// The caller's limits, already clamped to the ceiling ([`budget::clamp_requested`]).
    pub budget: &'a Value,
    /// Who asked, for the trace.
    pub by: &'a str,
}

/// Creates a queued execution and enqueues it. Returns None when the org already used
/// the idempotency key (nothing is written then).
pub async fn create(
    connection: &mut PgConnection,
    execution: &NewExecution<'_>,
) -> sqlx::Result<Option<Uuid>> {
    let created: Option<Moved> = sqlx::query_as(
        "INSERT INTO executions (id, org_id, node_id, idempotency_key, model, budget, status, queued_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, now()) \
         ON CONFLICT (org_id, idempotency_key) DO NOTHING RETURNING id, org_id, step",
    )
    .bind(execution.id)
    .bind(execution.org_id)
    .bind(execution.node_id)
    .bind(execution.idempotency_key)
    .bind(execution.model)
    .bind(execution.budget)
    .bind(ExecutionStatus::Queued.as_str())
    .fetch_optional(&mut *connection)
    .await?;
    let Some(created) = created else {
        return Ok(None);
    };
    record(
        connection,
        created,
        Transition::Queued,
        json!({ "model": execution.model, "by": execution.by }),
    )
    .await?;
    Ok(Some(created.id))
}

/// A failed execution with a transient error: its message went to the DLQ.
const DEAD_LETTERED: &str = "status = 'failed' AND error_class = 'transient'";

/// `queued | running (lease run out) | failed and dead-lettered → running` under a new
/// lease. A dead-lettered run is reopened first (its message came back from the DLQ,
/// whichever tool moved it). The lease records the message it was taken with, and
/// whether that was the message's last allowed receive (see [`requeue_stalled`]).
pub async fn claim(
    pool: &PgPool,
    execution_id: Uuid,
    org_id: Uuid,
    lease_length: Duration,
    receipt: Receipt<'_>,
) -> sqlx::Result<Claim> {
    let lease = Uuid::new_v4();
    let mut transaction = pool.begin().await?;
    let statement = format!(
        "WITH previous AS (SELECT id, status, COALESCE({DEAD_LETTERED}, false) AS dead_lettered FROM executions WHERE id = $1 AND org_id = $2 FOR UPDATE) \
         UPDATE executions SET status = $5, lease_token = $3, lease_expires_at = now() + make_interval(secs => $4), last_receive = $6, lease_message_id = $8, \
                attempts = attempts + 1, started_at = COALESCE(started_at, now()), updated_at = now(), \
                error_class = CASE WHEN previous.dead_lettered THEN NULL ELSE error_class END, \
                error_code = CASE WHEN previous.dead_lettered THEN NULL ELSE error_code END, \
                error_message = CASE WHEN previous.dead_lettered THEN NULL ELSE error_message END, \
                finished_at = CASE WHEN previous.dead_lettered THEN NULL ELSE finished_at END \
         FROM previous WHERE executions.id = previous.id \
           AND (previous.status = $7 OR previous.dead_lettered \
                OR (previous.status = $5 AND (executions.lease_expires_at IS NULL OR executions.lease_expires_at < now()))) \
         RETURNING executions.id, executions.org_id, executions.step, executions.attempts, previous.dead_lettered"
    );
    let claimed: Option<(Uuid, Uuid, i32, i32, bool)> = sqlx::query_as(&statement)
        .bind(execution_id)
        .bind(org_id)
        .bind(lease)
        .bind(lease_length.as_secs_f64())
        .bind(ExecutionStatus::Running.as_str())
        .bind(receipt.last_receive)
        .bind(ExecutionStatus::Queued.as_str())
        .bind(receipt.message_id)
        .fetch_optional(&mut *transaction)
        .await?;
    let Some((id, org_id, step, attempt, redriven)) = claimed else {
        transaction.rollback().await?;
        return lease::claim_not_taken(
            pool,
            LeasedTable::Executions,
            execution_id,
            org_id,
            receipt,
        )
        .await;
    };
    let execution = Moved { id, org_id, step };
    if redriven {
        record(
            &mut transaction,
            execution,
            Transition::Redriven,
            json!({ "by": "queue" }),
        )
        .await?;
    }
    record(
        &mut transaction,
        execution,
        Transition::Claimed,
        json!({ "attempt": attempt, "last_receive": receipt.last_receive }),
    )
    .await?;
    transaction.commit().await?;
    Ok(Claim::Acquired {
        lease,
        attempt: attempt as u32,
    })
}

/// `running → failed | queued (retrying) | failed (dead-lettered)` after a failed attempt,
/// fenced by the lease. A retrying run's `queued_at` is when its backoff ends, so the
/// sweeper leaves it alone until then. False when the lease is no longer this worker's.
pub async fn record_failure(
    pool: &PgPool,
    execution_id: Uuid,
    lease: Uuid,
    error: &JobError,
    disposition: Disposition,
) -> sqlx::Result<bool> {
    let (status, transition, delay) = match disposition {
        Disposition::Failed => (ExecutionStatus::Failed, Transition::Failed, None),
        Disposition::Retrying { delay } => {
            (ExecutionStatus::Queued, Transition::Retrying, Some(delay))
        }
        Disposition::DeadLettered => (ExecutionStatus::Failed, Transition::DeadLettered, None),
    };
    let mut transaction = pool.begin().await?;
    let moved: Option<Moved> = sqlx::query_as(
        "UPDATE executions SET status = $3, error_class = $4, error_code = $5, error_message = $6, lease_token = NULL, lease_expires_at = NULL, \
         queued_at = CASE WHEN $7::float8 IS NULL THEN queued_at ELSE now() + make_interval(secs => $7) END, \
         finished_at = CASE WHEN $7::float8 IS NULL THEN now() ELSE NULL END, updated_at = now() \
         WHERE id = $1 AND lease_token = $2 RETURNING id, org_id, step",
    )
    .bind(execution_id)
    .bind(lease)
    .bind(status.as_str())
    .bind(error.class())
    .bind(error.code())
    .bind(error.message())
    .bind(delay.map(|delay| delay.as_secs_f64()))
    .fetch_optional(&mut *transaction)
    .await?;
    let Some(moved) = moved else {
        return Ok(false);
    };
    record(&mut transaction, moved, transition, failure_data(error)).await?;
    transaction.commit().await?;
    Ok(true)
}

fn failure_data(error: &JobError) -> Value {
    json!({ "error_class": error.class(), "error_code": error.code(), "message": error.message() })
}

/// `running → queued` at the shutdown deadline: the worker makes its message visible at
/// once instead of enqueueing a new one. False when the lease is no longer this worker's.
pub async fn release(pool: &PgPool, execution_id: Uuid, lease: Uuid) -> sqlx::Result<bool> {
    let mut transaction = pool.begin().await?;
    let moved: Option<Moved> = sqlx::query_as(
        "UPDATE executions SET status = $3, lease_token = NULL, lease_expires_at = NULL, queued_at = now(), updated_at = now() \
         WHERE id = $1 AND lease_token = $2 RETURNING id, org_id, step",
    )
    .bind(execution_id)
    .bind(lease)
    .bind(ExecutionStatus::Queued.as_str())
    .fetch_optional(&mut *transaction)
    .await?;
    let Some(moved) = moved else {
        return Ok(false);
    };
    record(
        &mut transaction,
        moved,
        Transition::Released { enqueue: false },
        json!({ "reason": "shutdown deadline" }),
    )
    .await?;
    transaction.commit().await?;
    Ok(true)
}

/// Puts a stalled execution back on the queue, locking it first: one queued for longer
/// than the sweeper's threshold (its message may be lost) or one whose worker's lease ran
/// out. One whose lease ran out on the message's last allowed receive is dead-lettered
/// instead, as SQS did with its message. Parked runs (awaiting_input, paused) are left
/// alone: an answer or a resume enqueues them. `by` names who asked.
pub async fn requeue_stalled(
    connection: &mut PgConnection,
    execution_id: Uuid,
    by: &str,
) -> sqlx::Result<Stalled> {
    let row: Option<(String, bool, bool)> = sqlx::query_as(
        "SELECT status, last_receive, (lease_expires_at IS NULL OR lease_expires_at < now()) FROM executions WHERE id = $1 FOR UPDATE",
    )
    .bind(execution_id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((status, last_receive, lease_expired)) = row else {
        return Ok(Stalled::NotStalled);
    };
    let status = ExecutionStatus::from_name(&status);
    let abandoned = status == Some(ExecutionStatus::Running) && lease_expired;
    if abandoned && last_receive {
        let error = JobError::transient(
            LAST_ATTEMPT_LOST,
            "the worker on the last allowed attempt stopped without recording an outcome; SQS dead-lettered the message",
        );
        let moved: Moved = sqlx::query_as(
            "UPDATE executions SET status = $2, error_class = $3, error_code = $4, error_message = $5, \
             lease_token = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now() WHERE id = $1 \
             RETURNING id, org_id, step",
        )
        .bind(execution_id)
        .bind(ExecutionStatus::Failed.as_str())
        .bind(error.class())
        .bind(error.code())
        .bind(error.message())
        .fetch_one(&mut *connection)
        .await?;
        let mut data = failure_data(&error);
        data["by"] = json!(by);
        record(connection, moved, Transition::DeadLettered, data).await?;
        return Ok(Stalled::DeadLettered);
    }
    if status != Some(ExecutionStatus::Queued) && !abandoned {
        return Ok(Stalled::NotStalled);
    }
    let moved: Moved = sqlx::query_as(
        "UPDATE executions SET status = $2, lease_token = NULL, lease_expires_at = NULL, queued_at = now(), updated_at = now() \
         WHERE id = $1 RETURNING id, org_id, step",
    )
    .bind(execution_id)
    .bind(ExecutionStatus::Queued.as_str())
    .fetch_one(&mut *connection)
    .await?;
    record(
        connection,
        moved,
        Transition::Requeued,
        json!({ "from": status.map(ExecutionStatus::as_str), "by": by }),
    )
    .await?;
    Ok(Stalled::Requeued)
}

/// Executions the sweeper should look at, locked (others' locks skipped): queued for more
/// than `waited` since they (re-)entered the queue, or running under a lease that ran out
/// more than `waited` ago.
pub async fn lock_stalled(
    connection: &mut PgConnection,
    waited: Duration,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    // Written out (not bound) so the planner can use the partial index `executions_waiting`.
    sqlx::query_scalar(
        "SELECT id FROM executions \
         WHERE (status = 'queued' AND queued_at < now() - make_interval(secs => $1)) \
            OR (status = 'running' AND lease_expires_at < now() - make_interval(secs => $1)) \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(waited.as_secs_f64())
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// An execution ops should look at: queued too long, or its lease ran out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StuckExecution {
    pub id: Uuid,
    pub org_id: Uuid,
    pub status: String,
    /// `queued_too_long` or `lease_expired`.
    pub reason: String,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub attempts: i32,
}

/// Executions queued for more than `waited`, and running ones whose lease ran out.
pub async fn stuck(
    pool: &PgPool,
    waited: Duration,
    limit: i64,
) -> sqlx::Result<Vec<StuckExecution>> {
    sqlx::query_as(
        "SELECT id, org_id, status, \
                CASE WHEN status = $3 THEN 'lease_expired' ELSE 'queued_too_long' END AS reason, \
                CASE WHEN status = $3 THEN lease_expires_at ELSE queued_at END AS since, attempts \
         FROM executions WHERE (status = $2 AND queued_at < now() - make_interval(secs => $1)) \
                            OR (status = $3 AND lease_expires_at < now()) \
         ORDER BY since NULLS FIRST LIMIT $4",
    )
    .bind(waited.as_secs_f64())
    .bind(ExecutionStatus::Queued.as_str())
    .bind(ExecutionStatus::Running.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How long the longest-waiting execution has been on the queue (backoffs not counted).
pub async fn oldest_waiting_secs(pool: &PgPool) -> sqlx::Result<Option<f64>> {
    sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM now() - min(queued_at))::float8 FROM executions WHERE status = $1 AND queued_at <= now()",
    )
    .bind(ExecutionStatus::Queued.as_str())
    .fetch_one(pool)
    .await
}

/// `failed (dead-lettered) → queued` before an ops redrive moves the run's message back
/// to the queue (the moved message is the wake-up: no new one). False when the run is not
/// dead-lettered.
pub async fn reopen_dead_lettered(
    connection: &mut PgConnection,
    execution_id: Uuid,
    by: &str,
) -> sqlx::Result<bool> {
    let statement = format!(
        "UPDATE executions SET status = $2, queued_at = now(), updated_at = now(), \
         error_class = NULL, error_code = NULL, error_message = NULL, finished_at = NULL \
         WHERE id = $1 AND {DEAD_LETTERED} RETURNING id, org_id, step"
    );
    let moved: Option<Moved> = sqlx::query_as(&statement)
        .bind(execution_id)
        .bind(ExecutionStatus::Queued.as_str())
        .fetch_optional(&mut *connection)
        .await?;
    let Some(moved) = moved else {
        return Ok(false);
    };
    record(connection, moved, Transition::Redriven, json!({ "by": by })).await?;
    Ok(true)
}
