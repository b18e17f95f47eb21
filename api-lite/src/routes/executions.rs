//! Executions: status, the paged trace, pause/resume/cancel, answers to questions and
//! decisions on tool calls held for approval. Every query is scoped by the caller's org.
//!
//! The worker parks a run (awaiting_input) in the same transaction that records the
//! question, and an answer re-enqueues the run only once nothing else is pending, in the
//! transaction that records it; so an answer can never arrive "too early" and be lost.
//! A running execution is paused or cancelled by setting `control`, which the worker
//! polls while the model answers (cancel) and checks between steps (pause). Only a token
//! with the approver role may approve or reject a tool call held for approval. The live
//! event stream is [`super::events`].

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::outbox;
use shared::queue::{JobKind, JobMessage};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::{APPROVER_ROLE, Caller};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct ExecutionView {
    pub id: Uuid,
    pub node_id: Uuid,
    pub model: String,
    pub status: String,
    /// A pause or cancel asked for and not yet honoured by the worker.
    pub control: Option<String>,
    /// The step running now or next (the number of committed steps).
    pub step: i32,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub budget: Value,
    pub attempts: i32,
    pub result: Option<String>,
    pub error_class: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub pending_inputs: Vec<PendingInput>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct PendingInput {
    pub id: Uuid,
    /// `question` (answer with `/input`) or `approval` (approve or reject).
    pub kind: String,
    pub tool: String,
    pub arguments: Value,
    pub question: Option<String>,
    pub step: i32,
    pub created_at: DateTime<Utc>,
}

const EXECUTION_COLUMNS: &str = "id, node_id, model, status, control, step, tokens_in, tokens_out, cost_usd, budget, attempts, result, \
     error_class, error_code, error_message, created_at, updated_at, queued_at, started_at, finished_at";

const EXECUTION_STATUSES: [&str; 7] = [
    "queued",
    "running",
    "awaiting_input",
    "paused",
    "completed",
    "failed",
    "cancelled",
];

#[derive(Debug, Serialize)]
pub struct ExecutionPage {
    pub executions: Vec<ExecutionView>,
    pub next_cursor: Option<Uuid>,
}

/// The caller's executions, newest first, optionally of one status.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<super::ListQuery>,
) -> Result<ApiJson<ExecutionPage>, ApiError> {
    let limit = super::list_limit(query.limit, query.status.as_deref(), &EXECUTION_STATUSES)?;
    // Ids are UUIDv7: id order is creation order, a stable keyset cursor.
    let statement = format!(
        "SELECT {EXECUTION_COLUMNS} FROM executions WHERE org_id = $1 AND ($2::text IS NULL OR status = $2) \
         AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    );
    let mut executions: Vec<ExecutionView> = sqlx::query_as(&statement)
        .bind(caller.org_id)
        .bind(&query.status)
        .bind(query.cursor)
        .bind(limit + 1)
        .fetch_all(&state.pool)
        .await?;
    let next_cursor = super::next_page(&mut executions, limit, |execution| execution.id);
    Ok(ApiJson(ExecutionPage {
        executions,
        next_cursor,
    }))
}

pub async fn load_execution(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<ExecutionView, ApiError> {
    let statement =
        format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = $1 AND org_id = $2");
    let mut execution: ExecutionView = sqlx::query_as(&statement)
        .bind(id)
        .bind(caller.org_id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("execution"))?;
    execution.pending_inputs = sqlx::query_as(
        "SELECT id, kind, tool, arguments, question, step, created_at FROM execution_inputs \
         WHERE execution_id = $1 AND status = 'pending' ORDER BY created_at, id",
    )
    .bind(id)
    .fetch_all(&state.pool)
    .await?;
    Ok(execution)
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<ExecutionView>, ApiError> {
    Ok(ApiJson(load_execution(&state, &caller, id).await?))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TraceEvent {
    pub id: i64,
    pub step: Option<i32>,
    pub kind: String,
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceQuery {
    /// The `next_cursor` of the previous page: events after this id.
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct TracePage {
    pub events: Vec<TraceEvent>,
    pub next_cursor: Option<i64>,
}

pub async fn trace(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<TraceQuery>,
) -> Result<ApiJson<TracePage>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    owned_status(&state.pool, &caller, id).await?;
    let mut events: Vec<TraceEvent> = sqlx::query_as(
        "SELECT id, step, kind, data, created_at FROM execution_events \
         WHERE execution_id = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4",
    )
    .bind(id)
    .bind(caller.org_id)
    .bind(query.after.unwrap_or(0))
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = if events.len() as i64 > limit {
        events.truncate(limit as usize);
        events.last().map(|event| event.id)
    } else {
        None
    };
    Ok(ApiJson(TracePage {
        events,
        next_cursor,
    }))
}

/// The execution's status, locked for the rest of the transaction; 404 when the caller's
/// org does not own it.
async fn lock_status(
    connection: &mut PgConnection,
    caller: &Caller,
    id: Uuid,
) -> Result<ExecutionState, ApiError> {
    sqlx::query_as(
        "SELECT status, control, (lease_expires_at IS NULL OR lease_expires_at < now()) AS lease_expired \
         FROM executions WHERE id = $1 AND org_id = $2 FOR UPDATE",
    )
    .bind(id)
    .bind(caller.org_id)
    .fetch_optional(connection)
    .await?
    .ok_or(ApiError::NotFound("execution"))
}

async fn owned_status(
    pool: &sqlx::PgPool,
    caller: &Caller,
    id: Uuid,
) -> Result<ExecutionState, ApiError> {
    sqlx::query_as(
        "SELECT status, control, (lease_expires_at IS NULL OR lease_expires_at < now()) AS lease_expired \
         FROM executions WHERE id = $1 AND org_id = $2",
    )
    .bind(id)
    .bind(caller.org_id)
    .fetch_optional(pool)
    .await?
    .ok_or(ApiError::NotFound("execution"))
}

#[derive(Debug, sqlx::FromRow)]
struct ExecutionState {
    status: String,
    control: Option<String>,
    lease_expired: bool,
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

async fn record_event(
    connection: &mut PgConnection,
    caller: &Caller,
    id: Uuid,
    kind: &str,
    data: Value,
) -> Result<(), ApiError> {
    let mut payload = serde_json::Map::new();
    payload.insert("by".into(), Value::String(caller.subject.clone()));
    if let Value::Object(extra) = data {
        payload.extend(extra);
    }
    sqlx::query("INSERT INTO execution_events (execution_id, org_id, step, kind, data) SELECT id, org_id, step, $2, $3 FROM executions WHERE id = $1")
        .bind(id)
        .bind(kind)
        .bind(Value::Object(payload))
        .execute(connection)
        .await?;
    Ok(())
}

/// Puts a parked execution back on the queue (status queued, message via the outbox).
async fn requeue(
    connection: &mut PgConnection,
    caller: &Caller,
    id: Uuid,
    from_status: &str,
) -> Result<bool, ApiError> {
    let requeued = sqlx::query(
        "UPDATE executions SET status = 'queued', queued_at = now(), updated_at = now() \
         WHERE id = $1 AND status = $2 \
           AND NOT EXISTS (SELECT 1 FROM execution_inputs WHERE execution_id = $1 AND status = 'pending')",
    )
    .bind(id)
    .bind(from_status)
    .execute(&mut *connection)
    .await?;
    if requeued.rows_affected() == 0 {
        return Ok(false);
    }
    outbox::enqueue(
        connection,
        outbox::AGENT_JOBS,
        &JobMessage::new(JobKind::AgentRun, id, caller.org_id),
    )
    .await?;
    Ok(true)
}

pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    let mut transaction = state.pool.begin().await?;
    let current = lock_status(&mut transaction, &caller, id).await?;
    match current.status.as_str() {
        "paused" => {}
        // Not started yet: park it now; the message that arrives finds nothing to do.
        "queued" => {
            sqlx::query("UPDATE executions SET status = 'paused', control = NULL, updated_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await?;
            record_event(&mut transaction, &caller, id, "paused", json!({})).await?;
        }
        // The worker pauses at its next step boundary (after the answer, when waiting).
        "running" | "awaiting_input" => {
            sqlx::query("UPDATE executions SET control = 'pause', updated_at = now() WHERE id = $1 AND control IS NULL")
                .bind(id)
                .execute(&mut *transaction)
                .await?;
            record_event(
                &mut transaction,
                &caller,
                id,
                "control_requested",
                json!({ "action": "pause" }),
            )
            .await?;
        }
        status => {
            return Err(ApiError::conflict(
                "not_pausable",
                format!("an execution in status {status} cannot be paused"),
            ));
        }
    }
    transaction.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(load_execution(&state, &caller, id).await?),
    ))
}

pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    let mut transaction = state.pool.begin().await?;
    let current = lock_status(&mut transaction, &caller, id).await?;
    match (current.status.as_str(), current.control.as_deref()) {
        ("paused", _) => {
            requeue(&mut transaction, &caller, id, "paused").await?;
            record_event(&mut transaction, &caller, id, "resumed", json!({})).await?;
        }
        // A pause not yet honoured is simply withdrawn.
        ("running" | "awaiting_input", Some("pause")) => {
            sqlx::query("UPDATE executions SET control = NULL, updated_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await?;
            record_event(&mut transaction, &caller, id, "resumed", json!({})).await?;
        }
        (status, _) => {
            return Err(ApiError::conflict(
                "not_paused",
                format!("the execution is {status}, not paused"),
            ));
        }
    }
    transaction.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(load_execution(&state, &caller, id).await?),
    ))
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    let mut transaction = state.pool.begin().await?;
    let current = lock_status(&mut transaction, &caller, id).await?;
    let status = current.status.as_str();
    if status == "cancelled" {
        transaction.rollback().await?;
        return Ok((
            StatusCode::OK,
            ApiJson(load_execution(&state, &caller, id).await?),
        ));
    }
    if is_terminal(status) {
        return Err(ApiError::conflict(
            "not_cancellable",
            format!("the execution already ended as {status}"),
        ));
    }
    let no_live_worker = status != "running" || current.lease_expired;
    if no_live_worker {
        // Nobody runs it: cancel it here and now.
        sqlx::query(
            "UPDATE executions SET status = 'cancelled', control = NULL, error_code = 'cancelled', error_message = 'cancelled by request', \
             lease_token = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("UPDATE execution_inputs SET status = 'cancelled' WHERE execution_id = $1 AND status = 'pending'")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        record_event(&mut transaction, &caller, id, "cancelled", json!({})).await?;
    } else {
        // The worker notices within `control_poll_ms`, even mid model call.
        sqlx::query("UPDATE executions SET control = 'cancel', updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        record_event(
            &mut transaction,
            &caller,
            id,
            "control_requested",
            json!({ "action": "cancel" }),
        )
        .await?;
    }
    transaction.commit().await?;
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(load_execution(&state, &caller, id).await?),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRequest {
    pub answer: String,
    /// Which question; may be left out while exactly one question is pending.
    pub input_id: Option<Uuid>,
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
) -> Result<InputRow, ApiError> {
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
            Some(_) => ApiError::NotFound("input"),
            None => ApiError::conflict("nothing_pending", format!("no {kind} is pending")),
        });
    };
    if input_id.is_none() && rows.next().is_some() {
        return Err(ApiError::invalid(format!(
            "several {kind}s are pending; name one with input_id"
        )));
    }
    if row.status != "pending" {
        return Err(ApiError::conflict(
            "already_answered",
            format!("this {} was already {}", row.kind, row.status),
        ));
    }
    Ok(row)
}

pub async fn input(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<InputRequest>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    if request.answer.is_empty() || request.answer.len() > 64 * 1024 {
        return Err(ApiError::invalid("answer must be 1 byte to 64 KiB"));
    }
    let mut transaction = state.pool.begin().await?;
    let current = lock_status(&mut transaction, &caller, id).await?;
    if is_terminal(&current.status) {
        return Err(ApiError::conflict(
            "nothing_pending",
            format!("the execution already ended as {}", current.status),
        ));
    }
    let row = lock_input(&mut transaction, id, request.input_id, "question").await?;
    sqlx::query("UPDATE execution_inputs SET status = 'answered', answer = $2, answered_by = $3, answered_at = now() WHERE id = $1")
        .bind(row.id)
        .bind(&request.answer)
        .bind(&caller.subject)
        .execute(&mut *transaction)
        .await?;
    record_event(
        &mut transaction,
        &caller,
        id,
        "human_input",
        json!({ "input_id": row.id, "answer": request.answer }),
    )
    .await?;
    requeue(&mut transaction, &caller, id, "awaiting_input").await?;
    transaction.commit().await?;
    tracing::info!(execution_id = %id, input_id = %row.id, "question answered");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(load_execution(&state, &caller, id).await?),
    ))
}

pub async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, input_id, decision)): ApiPath<(Uuid, Uuid, String)>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    let new_status = match decision.as_str() {
        "approve" => "approved",
        "reject" => "rejected",
        _ => return Err(ApiError::NotFound("route")),
    };
    if !caller.has_role(APPROVER_ROLE) {
        return Err(ApiError::Forbidden(
            "deciding a held tool call needs a token with the approver role",
        ));
    }
    let mut transaction = state.pool.begin().await?;
    let current = lock_status(&mut transaction, &caller, id).await?;
    if is_terminal(&current.status) {
        return Err(ApiError::conflict(
            "nothing_pending",
            format!("the execution already ended as {}", current.status),
        ));
    }
    let row = lock_input(&mut transaction, id, Some(input_id), "approval").await?;
    sqlx::query("UPDATE execution_inputs SET status = $2, answered_by = $3, answered_at = now() WHERE id = $1")
        .bind(row.id)
        .bind(new_status)
        .bind(&caller.subject)
        .execute(&mut *transaction)
        .await?;
    record_event(
        &mut transaction,
        &caller,
        id,
        new_status,
        json!({ "input_id": row.id }),
    )
    .await?;
    requeue(&mut transaction, &caller, id, "awaiting_input").await?;
    transaction.commit().await?;
    tracing::info!(execution_id = %id, input_id = %row.id, decision = new_status, "approval decided");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(load_execution(&state, &caller, id).await?),
    ))
}
