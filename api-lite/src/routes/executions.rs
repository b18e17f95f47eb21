//! Executions: status, the paged trace, pause/resume/cancel, answers to questions and
//! decisions on tool calls held for approval. Every query is scoped by the caller's org.
//!
//! The control routes call `shared::executions::control`, which owns what each request
//! does to a run (see there); this module only maps its outcomes to HTTP. Only a token
//! with the approver role may approve or reject a tool call held for approval. The live
//! event stream is [`super::events`].

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::executions::ExecutionStatus;
use shared::executions::control::{self, ControlError};
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
    let limit = super::list_limit(
        query.limit,
        query.status.as_deref(),
        &ExecutionStatus::names(),
    )?;
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

/// 404 unless the caller's org owns the execution.
async fn owned_status(pool: &sqlx::PgPool, caller: &Caller, id: Uuid) -> Result<(), ApiError> {
    let owned: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM executions WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(caller.org_id)
            .fetch_optional(pool)
            .await?;
    owned.map(|_| ()).ok_or(ApiError::NotFound("execution"))
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::NotFound => ApiError::NotFound("execution"),
            ControlError::InputNotFound => ApiError::NotFound("input"),
            ControlError::Conflict { code, message } => ApiError::Conflict { code, message },
            ControlError::Invalid(message) => ApiError::invalid(message),
            ControlError::Database(error) => error.into(),
        }
    }
}

/// Answers `202 Accepted` with the execution as it is now.
async fn accepted(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(load_execution(state, caller, id).await?),
    ))
}

pub async fn pause(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    let mut transaction = state.pool.begin().await?;
    control::pause(&mut transaction, id, caller.org_id, &caller.subject).await?;
    transaction.commit().await?;
    accepted(&state, &caller, id).await
}

pub async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    let mut transaction = state.pool.begin().await?;
    control::resume(&mut transaction, id, caller.org_id, &caller.subject).await?;
    transaction.commit().await?;
    accepted(&state, &caller, id).await
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    let mut transaction = state.pool.begin().await?;
    let outcome = control::cancel(&mut transaction, id, caller.org_id, &caller.subject).await?;
    transaction.commit().await?;
    if outcome == control::Outcome::Unchanged {
        return Ok((
            StatusCode::OK,
            ApiJson(load_execution(&state, &caller, id).await?),
        ));
    }
    accepted(&state, &caller, id).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRequest {
    pub answer: String,
    /// Which question; may be left out while exactly one question is pending.
    pub input_id: Option<Uuid>,
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
    let input_id = control::answer(
        &mut transaction,
        id,
        caller.org_id,
        request.input_id,
        &request.answer,
        &caller.subject,
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(execution_id = %id, %input_id, "question answered");
    accepted(&state, &caller, id).await
}

pub async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, input_id, decision)): ApiPath<(Uuid, Uuid, String)>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => return Err(ApiError::NotFound("route")),
    };
    if !caller.has_role(APPROVER_ROLE) {
        return Err(ApiError::Forbidden(
            "deciding a held tool call needs a token with the approver role",
        ));
    }
    let mut transaction = state.pool.begin().await?;
    control::decide(
        &mut transaction,
        id,
        caller.org_id,
        input_id,
        approve,
        &caller.subject,
    )
    .await?;
    transaction.commit().await?;
    tracing::info!(execution_id = %id, %input_id, approve, "approval decided");
    accepted(&state, &caller, id).await
}
