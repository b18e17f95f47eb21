//! What people do to a run through the API: pause, resume, cancel, answer a question,
//! approve or reject a held tool call. Each locks the execution first, checks the caller's
//! org, and writes its change and trace event in the caller's transaction.
//!
//! A running run is paused or cancelled by setting `control`, which the worker checks
//! between steps (pause) and polls during a model call (cancel). An answer re-enqueues
//! the run only once nothing else is pending, in the transaction that records it, so an
//! answer can never arrive "too early" and be lost.

use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::step::OPEN_INPUTS;
use super::{ExecutionStatus, Moved, Transition, append_events, record};

/// Why a control request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such execution for the caller's org.
    #[error("execution not found")]
    NotFound,
    /// No such input on the execution.
    #[error("input not found")]
    InputNotFound,
    /// The run is not in a state where the request makes sense.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The request is ambiguous or malformed.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn conflict(code: &'static str, message: String) -> ControlError {
    ControlError::Conflict { code, message }
}

/// Whether a request changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Changed,
    /// Already so (a second cancel).
    Unchanged,
}

#[derive(Debug, sqlx::FromRow)]
struct Locked {
    id: Uuid,
    org_id: Uuid,
    step: i32,
    status: String,
    control: Option<String>,
    lease_expired: bool,
}

impl Locked {
    fn status(&self) -> Option<ExecutionStatus> {
        ExecutionStatus::from_name(&self.status)
    }

    fn moved(&self) -> Moved {
        Moved {
            id: self.id,
            org_id: self.org_id,
            step: self.step,
        }
    }

    fn is_terminal(&self) -> bool {
        self.status().is_some_and(ExecutionStatus::is_terminal)
    }
}

/// The execution, locked for the rest of the transaction.
async fn lock(
    connection: &mut PgConnection,
    execution_id: Uuid,
    org_id: Uuid,
) -> Result<Locked, ControlError> {
    sqlx::query_as(
        "SELECT id, org_id, step, status, control, (lease_expires_at IS NULL OR lease_expires_at < now()) AS lease_expired \
         FROM executions WHERE id = $1 AND org_id = $2 FOR UPDATE",
    )
    .bind(execution_id)
    .bind(org_id)
    .fetch_optional(connection)
    .await?
    .ok_or(ControlError::NotFound)
}

/// Adds who asked to an event's data.
fn by(by: &str, data: Value) -> Value {
    let mut payload = serde_json::Map::new();
    payload.insert("by".into(), Value::String(by.to_string()));
    if let Value::Object(extra) = data {
        payload.extend(extra);
    }
    Value::Object(payload)
}

async fn set_control(
    connection: &mut PgConnection,
    execution_id: Uuid,
    control: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE executions SET control = $2, updated_at = now() WHERE id = $1")
        .bind(execution_id)
        .bind(control)
        .execute(connection)
        .await?;
    Ok(())
}

/// Pauses a run: a queued one at once (`queued → paused`; the message that arrives finds
/// nothing to do), a running or waiting one at its next step boundary.
pub async fn pause(
    connection: &mut PgConnection,
    execution_id: Uuid,
    org_id: Uuid,
    asked_by: &str,
) -> Result<(), ControlError> {
    let locked = lock(connection, execution_id, org_id).await?;
    match locked.status() {
        Some(ExecutionStatus::Paused) => {}
        Some(ExecutionStatus::Queued) => {
            sqlx::query("UPDATE executions SET status = $2, control = NULL, updated_at = now() WHERE id = $1")
                .bind(execution_id)
                .bind(ExecutionStatus::Paused.as_str())
                .execute(&mut *connection)
                .await?;
            record(
                connection,
                locked.moved(),
                Transition::Paused,
                by(asked_by, json!({})),
            )
            .await?;
        }
        Some(ExecutionStatus::Running | ExecutionStatus::AwaitingInput) => {
            if locked.control.is_none() {
                set_control(connection, execution_id, Some("pause")).await?;
            }
            let event = by(asked_by, json!({ "action": "pause" }));
            append_events(
                connection,
                locked.moved(),
                &[("control_requested".into(), event)],
            )
            .await?;
        }
        _ => {
            return Err(conflict(
                "not_pausable",
                format!("an execution in status {} cannot be paused", locked.status),
            ));
        }
    }
    Ok(())
}

/// Resumes a paused run (`paused → queued`, enqueued), or withdraws a pause the worker
/// has not honoured yet.
pub async fn resume(
    connection: &mut PgConnection,
    execution_id: Uuid,
    org_id: Uuid,
    asked_by: &str,
) -> Result<(), ControlError> {
    let locked = lock(connection, execution_id, org_id).await?;
    match (locked.status(), locked.control.as_deref()) {
        (Some(ExecutionStatus::Paused), _) => {
            sqlx::query("UPDATE executions SET status = $2, queued_at = now(), updated_at = now() WHERE id = $1")
                .bind(execution_id)
                .bind(ExecutionStatus::Queued.as_str())
                .execute(&mut *connection)
                .await?;
            record(
                connection,
                locked.moved(),
                Transition::Resumed,
                by(asked_by, json!({})),
            )
            .await?;
        }
        (Some(ExecutionStatus::Running | ExecutionStatus::AwaitingInput), Some("pause")) => {
            set_control(connection, execution_id, None).await?;
            let event = by(asked_by, json!({}));
            append_events(connection, locked.moved(), &[("resumed".into(), event)]).await?;
        }
        _ => {
            return Err(conflict(
                "not_paused",
                format!("the execution is {}, not paused", locked.status),
            ));
        }
    }
    Ok(())
}

/// Cancels a run: at once when no live worker holds it (`→ cancelled`, open inputs
/// closed), otherwise by asking its worker, which stops even mid model call.
pub async fn cancel(
    connection: &mut PgConnection,
    execution_id: Uuid,
    org_id: Uuid,
    asked_by: &str,
) -> Result<Outcome, ControlError> {
    let locked = lock(connection, execution_id, org_id).await?;
    let status = locked.status();
    if status == Some(ExecutionStatus::Cancelled) {
        return Ok(Outcome::Unchanged);
    }
    if locked.is_terminal() {
        return Err(conflict(
            "not_cancellable",
            format!("the execution already ended as {}", locked.status),
        ));
    }
    let live_worker = status == Some(ExecutionStatus::Running) && !locked.lease_expired;
    if live_worker {
        set_control(connection, execution_id, Some("cancel")).await?;
        let event = by(asked_by, json!({ "action": "cancel" }));
        append_events(
            connection,
            locked.moved(),
            &[("control_requested".into(), event)],
        )
        .await?;
        return Ok(Outcome::Changed);
    }
    sqlx::query(
        "UPDATE executions SET status = $2, control = NULL, error_code = 'cancelled', error_message = 'cancelled by request', \
         lease_token = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(execution_id)
    .bind(ExecutionStatus::Cancelled.as_str())
    .execute(&mut *connection)
    .await?;
    sqlx::query("UPDATE execution_inputs SET status = 'cancelled' WHERE execution_id = $1 AND status = ANY($2)")
        .bind(execution_id)
        .bind(&OPEN_INPUTS[..])
        .execute(&mut *connection)
        .await?;
    record(
        connection,
        locked.moved(),
        Transition::Cancelled,
        by(asked_by, json!({})),
    )
    .await?;
    Ok(Outcome::Changed)
}

#[derive(Debug, sqlx::FromRow)]
struct InputRow {
    id: Uuid,
    kind: String,
    status: String,
}

/// Locks the input the caller means, or the only pending one of `kind`.
async fn lock_input(
    connection: &mut PgConnection,
    execution_id: Uuid,
    input_id: Option<Uuid>,
    kind: &str,
) -> Result<InputRow, ControlError> {
    let rows: Vec<InputRow> = sqlx::query_as(
        "SELECT id, kind, status FROM execution_inputs \
         WHERE execution_id = $1 AND kind = $2 AND (($3::uuid IS NULL AND status = 'pending') OR id = $3) \
         ORDER BY created_at, id FOR UPDATE",
    )
    .bind(execution_id)
    .bind(kind)
    .bind(input_id)
    .fetch_all(connection)
    .await?;
    let mut rows = rows.into_iter();
    let Some(row) = rows.next() else {
        return Err(match input_id {
            Some(_) => ControlError::InputNotFound,
            None => conflict("nothing_pending", format!("no {kind} is pending")),
        });
    };
    if input_id.is_none() && rows.next().is_some() {
        return Err(ControlError::Invalid(format!(
            "several {kind}s are pending; name one with input_id"
        )));
    }
    if row.status != "pending" {
        return Err(conflict(
            "already_answered",
            format!("this {} was already {}", row.kind, row.status),
        ));
    }
    Ok(row)
}

/// `awaiting_input → queued` once no input is pending any more. Returns whether it moved.
async fn requeue_when_nothing_pending(
    connection: &mut PgConnection,
    execution_id: Uuid,
) -> sqlx::Result<bool> {
    let requeued = sqlx::query(
        "UPDATE executions SET status = $2, queued_at = now(), updated_at = now() \
         WHERE id = $1 AND status = $3 \
           AND NOT EXISTS (SELECT 1 FROM execution_inputs WHERE execution_id = $1 AND status = 'pending')",
    )
    .bind(execution_id)
    .bind(ExecutionStatus::Queued.as_str())
    .bind(ExecutionStatus::AwaitingInput.as_str())
    .execute(connection)
    .await?;
    Ok(requeued.rows_affected() == 1)
}

/// Records the person's act on an input; when it was the last pending one of a waiting
/// run, that is the transition back to `queued`, otherwise a plain trace event.
async fn after_input(
    connection: &mut PgConnection,
    locked: &Locked,
    transition: Transition,
    data: Value,
) -> sqlx::Result<()> {
    if requeue_when_nothing_pending(connection, locked.id).await? {
        record(connection, locked.moved(), transition, data).await
    } else {
        append_events(
            connection,
            locked.moved(),
            &[(transition.as_str().to_string(), data)],
        )
        .await
    }
}

/// Answers a pending question (the one named, or the only one). Returns the input's id.
pub async fn answer(
    connection: &mut PgConnection,
    execution_id: Uuid,
    org_id: Uuid,
    input_id: Option<Uuid>,
    answer: &str,
    asked_by: &str,
) -> Result<Uuid, ControlError> {
    let locked = lock(connection, execution_id, org_id).await?;
    if locked.is_terminal() {
        return Err(conflict(
            "nothing_pending",
            format!("the execution already ended as {}", locked.status),
        ));
    }
    let input = lock_input(connection, execution_id, input_id, "question").await?;
    sqlx::query("UPDATE execution_inputs SET status = 'answered', answer = $2, answered_by = $3, answered_at = now() WHERE id = $1")
        .bind(input.id)
        .bind(answer)
        .bind(asked_by)
        .execute(&mut *connection)
        .await?;
    let data = by(asked_by, json!({ "input_id": input.id, "answer": answer }));
    after_input(connection, &locked, Transition::Answered, data).await?;
    Ok(input.id)
}

/// Approves or rejects a tool call held for approval.
pub async fn decide(
    connection: &mut PgConnection,
    execution_id: Uuid,
    org_id: Uuid,
    input_id: Uuid,
    approve: bool,
    asked_by: &str,
) -> Result<(), ControlError> {
    let locked = lock(connection, execution_id, org_id).await?;
    if locked.is_terminal() {
        return Err(conflict(
            "nothing_pending",
            format!("the execution already ended as {}", locked.status),
        ));
    }
    let input = lock_input(connection, execution_id, Some(input_id), "approval").await?;
    let (input_status, transition) = if approve {
        ("approved", Transition::Approved)
    } else {
        ("rejected", Transition::Rejected)
    };
    sqlx::query("UPDATE execution_inputs SET status = $2, answered_by = $3, answered_at = now() WHERE id = $1")
        .bind(input.id)
        .bind(input_status)
        .bind(asked_by)
        .execute(&mut *connection)
        .await?;
    let data = by(asked_by, json!({ "input_id": input.id }));
    after_input(connection, &locked, transition, data).await?;
    Ok(())
}
