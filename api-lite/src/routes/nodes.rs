//! Nodes (the tasks agents execute) and `POST /v1/nodes/{id}/execute`, which creates an
//! execution and enqueues it through the outbox. The same `Idempotency-Key` gives the
//! same execution. Every query is scoped by the caller's org.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::executions::budget::{self, RequestedBudget};
use shared::executions::{self, NewExecution};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::executions::{ExecutionPage, ExecutionView, load_execution};
use crate::state::AppState;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NodeView {
    pub id: Uuid,
    pub parent_id: Option<Uuid>,
    pub title: String,
    pub instructions: String,
    pub inputs: Value,
    pub outputs: Value,
    /// Goes up by one with every update; name it (If-Match or `version`) to update.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const NODE_COLUMNS: &str =
    "id, parent_id, title, instructions, inputs, outputs, version, created_at, updated_at";

async fn load_node(state: &AppState, caller: &Caller, id: Uuid) -> Result<NodeView, ApiError> {
    let statement = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1 AND org_id = $2");
    sqlx::query_as(&statement)
        .bind(id)
        .bind(caller.org_id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("node"))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNode {
    pub title: String,
    pub instructions: String,
    #[serde(default)]
    pub inputs: Value,
    pub parent_id: Option<Uuid>,
}

/// Creates a node (a task an agent executes).
#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", request_body = CreateNode,
    responses((status = 201, description = "Created", body = NodeView),
        (status = 404, description = "`parent_id` names no node of the caller's org", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateNode>,
) -> Result<(StatusCode, ApiJson<NodeView>), ApiError> {
    let title = request.title.trim();
    check_text(title, &request.instructions)?;
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

/// A node (its `ETag` header is its version).
#[utoipa::path(get, path = "/v1/nodes/{id}", tag = "nodes", params(("id" = Uuid, Path, description = "The node's id")),
    responses((status = 200, description = "The node", body = NodeView)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let node = load_node(&state, &caller, id).await?;
    Ok(([(header::ETAG, etag(node.version))], ApiJson(node)).into_response())
}

fn check_text(title: &str, instructions: &str) -> Result<(), ApiError> {
    if title.is_empty() || title.chars().count() > 500 {
        return Err(ApiError::invalid("title must be 1 to 500 characters"));
    }
    if instructions.trim().is_empty() || instructions.len() > 64 * 1024 {
        return Err(ApiError::invalid("instructions must be 1 byte to 64 KiB"));
    }
    Ok(())
}

/// A node's version as an entity tag: `"3"`.
fn etag(version: i32) -> String {
    format!("\"{version}\"")
}

/// The version an `If-Match` header names: `"3"`, `W/"3"` or `3`.
fn if_match_version(headers: &HeaderMap) -> Result<Option<i32>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(|value| value.trim().trim_start_matches("W/").trim_matches('"'))
        .and_then(|value| value.parse::<i32>().ok())
        .filter(|version| *version >= 1)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_if_match",
                "If-Match must name one node version, e.g. \"3\"",
            )
        })
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNode {
    pub title: Option<String>,
    pub instructions: Option<String>,
    /// Replaces the inputs (a JSON object).
    pub inputs: Option<Value>,
    /// The version this update is based on (or send `If-Match`); a stale one is refused
    /// with 409 and the current version.
    pub version: Option<i32>,
}

/// Updates a node's title, instructions or inputs, guarded by its version.
#[utoipa::path(patch, path = "/v1/nodes/{id}", tag = "nodes", request_body = UpdateNode,
    params(("id" = Uuid, Path, description = "The node's id"),
           ("If-Match" = Option<String>, Header, description = "The version read, as its ETag (`\"3\"`)")),
    responses((status = 200, description = "Updated: the node with its new version and `updated_at`", body = NodeView),
              (status = 409, description = "`version_conflict`: the node is at another version (its ETag header names it)", body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<UpdateNode>,
) -> Result<Response, ApiError> {
    let from_header = if_match_version(&headers)?;
    let expected = match (from_header, request.version) {
        (Some(header), Some(field)) if header != field => {
            return Err(ApiError::invalid(
                "If-Match and version name different versions",
            ));
        }
        (header, field) => header.or(field),
    };
    let current = load_node(&state, &caller, id).await?;
    let title = request
        .title
        .as_deref()
        .map(str::trim)
        .unwrap_or(&current.title)
        .to_string();
    let instructions = request
        .instructions
        .clone()
        .unwrap_or_else(|| current.instructions.clone());
    check_text(&title, &instructions)?;
    let inputs = match request.inputs {
        None => current.inputs.clone(),
        Some(object @ Value::Object(_)) => object,
        Some(_) => return Err(ApiError::invalid("inputs must be a JSON object")),
    };
    let statement = format!(
        "UPDATE nodes SET title = $3, instructions = $4, inputs = $5, version = version + 1, updated_at = now() \
         WHERE id = $1 AND org_id = $2 AND ($6::int IS NULL OR version = $6) RETURNING {NODE_COLUMNS}"
    );
    let updated: Option<NodeView> = sqlx::query_as(&statement)
        .bind(id)
        .bind(caller.org_id)
        .bind(&title)
        .bind(&instructions)
        .bind(&inputs)
        .bind(expected)
        .fetch_optional(&state.pool)
        .await?;
    match updated {
        Some(node) => Ok(([(header::ETAG, etag(node.version))], ApiJson(node)).into_response()),
        None => {
            // Stale (or deleted meanwhile): answer with the version there is now.
            let now = load_node(&state, &caller, id).await?;
            let mut response = ApiError::conflict(
                "version_conflict",
                format!(
                    "the node is at version {}, not {}; read it again and retry",
                    now.version,
                    expected.unwrap_or_default()
                ),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&etag(now.version)) {
                response.headers_mut().insert(header::ETAG, value);
            }
            Ok(response)
        }
    }
}

/// The node's executions, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/nodes/{id}/executions", tag = "nodes",
    params(("id" = Uuid, Path, description = "The node's id"), super::ListQuery),
    responses((status = 200, description = "A page of executions", body = ExecutionPage)))]
pub async fn executions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<super::ListQuery>,
) -> Result<ApiJson<ExecutionPage>, ApiError> {
    load_node(&state, &caller, id).await?;
    Ok(ApiJson(
        crate::routes::executions::page(&state, &caller, &query, Some(id)).await?,
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRequest {
    pub model: Option<String>,
    /// Limits for this run; unset ones take the worker's defaults, and each is lowered
    /// to the server's ceiling.
    pub budget: Option<RequestedBudget>,
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Starts an execution of the node; the same `Idempotency-Key` gives the same execution.
#[utoipa::path(post, path = "/v1/nodes/{id}/execute", tag = "nodes", request_body = ExecuteRequest,
    params(("id" = Uuid, Path, description = "The node's id"), ("Idempotency-Key" = Option<String>, Header, description = "1 to 255 visible ASCII characters")),
    responses((status = 202, description = "Queued", body = ExecutionView),
              (status = 200, description = "This Idempotency-Key already started it", body = ExecutionView),
              (status = 409, description = "`idempotency_key_reused` for another node", body = crate::error::ErrorBody)))]
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
