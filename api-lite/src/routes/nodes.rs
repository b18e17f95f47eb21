//! Nodes (the tasks agents execute) and `POST /v1/nodes/{id}/execute`, which creates an
//! execution and enqueues it through the outbox. The same `Idempotency-Key` gives the
//! same execution. Every query is scoped by the caller's org.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::executions::budget::{self, RequestedBudget};
use shared::executions::{self, NewExecution};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::routes::executions::{ExecutionView, load_execution};
use crate::state::AppState;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct NodeView {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub title: String,
    pub instructions: String,
    pub inputs: Value,
    pub outputs: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

async fn load_node(state: &AppState, caller: &Caller, id: Uuid) -> Result<NodeView, ApiError> {
    sqlx::query_as(
        "SELECT id, parent_id, title, instructions, inputs, outputs, created_at, updated_at FROM nodes WHERE id = $1 AND org_id = $2",
    )
    .bind(id)
    .bind(caller.org_id)
    .fetch_optional(&state.pool)
    .await?
    .ok_or(ApiError::NotFound("node"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    pub title: String,
    pub instructions: String,
    #[serde(default)]
    pub inputs: Value,
    pub parent_id: Option<Uuid>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateNode>,
) -> Result<(StatusCode, ApiJson<NodeView>), ApiError> {
    let title = request.title.trim();
    if title.is_empty() || title.chars().count() > 500 {
        return Err(ApiError::invalid("title must be 1 to 500 characters"));
    }
    if request.instructions.trim().is_empty() || request.instructions.len() > 64 * 1024 {
        return Err(ApiError::invalid("instructions must be 1 byte to 64 KiB"));
    }
    let inputs = match request.inputs {
        Value::Null => Value::Object(Default::default()),
        object @ Value::Object(_) => object,
        _ => return Err(ApiError::invalid("inputs must be a JSON object")),
    };
    if let Some(parent_id) = request.parent_id {
        // Another org's node is as absent as a missing one.
        load_node(&state, &caller, parent_id).await?;
    }
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO nodes (id, org_id, parent_id, title, instructions, inputs) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(caller.org_id)
        .bind(request.parent_id)
        .bind(title)
        .bind(&request.instructions)
        .bind(&inputs)
        .execute(&state.pool)
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(load_node(&state, &caller, id).await?),
    ))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<NodeView>, ApiError> {
    Ok(ApiJson(load_node(&state, &caller, id).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    pub model: Option<String>,
    /// Limits for this run; unset ones take the worker's defaults, and each is lowered
    /// to the server's ceiling.
    pub budget: Option<RequestedBudget>,
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<(StatusCode, ApiJson<ExecutionView>), ApiError> {
    load_node(&state, &caller, node_id).await?;
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => {
            let key = value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|key| !key.is_empty() && key.len() <= 255)
                .ok_or_else(|| {
                    ApiError::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
                })?;
            Some(key.to_string())
        }
    };
    let model = request
        .model
        .map(|model| model.trim().to_string())
        .unwrap_or_else(|| state.settings.llm.model.clone());
    if model.is_empty() || model.len() > 200 {
        return Err(ApiError::invalid("model must be 1 to 200 characters"));
    }
    let agent_settings = &state.settings.agent_worker;
    if let Err(refusal) = budget::check_model(&model, agent_settings) {
        return Err(ApiError::bad_request(refusal.code(), refusal.to_string()));
    }
    let requested = request.budget.unwrap_or_default();
    requested.validate().map_err(ApiError::invalid)?;
    let budget = serde_json::to_value(requested.clamped(&agent_settings.budget_ceiling))
        .map_err(|error| ApiError::Internal(error.into()))?;

    let mut transaction = state.pool.begin().await?;
    let created = executions::create(
        &mut transaction,
        &NewExecution {
            id: Uuid::now_v7(),
            org_id: caller.org_id,
            node_id,
            idempotency_key: idempotency_key.as_deref(),
            model: &model,
            budget: &budget,
            by: &caller.subject,
        },
    )
    .await?;
    let Some(id) = created else {
        transaction.rollback().await?;
        let existing: (Uuid, Uuid) = sqlx::query_as(
            "SELECT id, node_id FROM executions WHERE org_id = $1 AND idempotency_key = $2",
        )
        .bind(caller.org_id)
        .bind(&idempotency_key)
        .fetch_one(&state.pool)
        .await?;
        if existing.1 != node_id {
            return Err(ApiError::conflict(
                "idempotency_key_reused",
                "this Idempotency-Key already started an execution of another node",
            ));
        }
        return Ok((
            StatusCode::OK,
            ApiJson(load_execution(&state, &caller, existing.0).await?),
        ));
    };
    transaction.commit().await?;
    tracing::info!(execution_id = %id, node_id = %node_id, "execution enqueued");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(load_execution(&state, &caller, id).await?),
    ))
}
