//! Read-only views across orgs: recent failures by error class, and executions that are
//! running or waiting for a person.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Operator;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FailureGroup {
    pub kind: String,
    pub error_class: Option<String>,
    pub error_code: Option<String>,
    pub count: i64,
    pub last_at: DateTime<Utc>,
    pub sample_id: Uuid,
    pub sample_message: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FailuresQuery {
    /// How far back to look, in seconds: 1 to 90 days' worth (default one day).
    #[param(minimum = 1, maximum = 7_776_000)]
    pub since_secs: Option<u64>,
}

/// The longest window `GET /v1/ops/failures` looks back over: 90 days.
const MAX_SINCE_SECS: u64 = 90 * 24 * 3600;

/// Recent failures grouped by kind and error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FailureGroups {
    pub groups: Vec<FailureGroup>,
}

/// Recent failures by kind and error.
#[utoipa::path(get, path = "/v1/ops/failures", tag = "ops", params(FailuresQuery),
    responses((status = 200, description = "Failure groups", body = FailureGroups)))]
pub async fn failures(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(query): ApiQuery<FailuresQuery>,
) -> Result<ApiJson<FailureGroups>, ApiError> {
    let since_secs = query.since_secs.unwrap_or(24 * 3600);
    if !(1..=MAX_SINCE_SECS).contains(&since_secs) {
        return Err(ApiError::invalid(format!(
            "since_secs must be between 1 and {MAX_SINCE_SECS} (90 days)"
        )));
    }
    let groups: Vec<FailureGroup> = sqlx::query_as(
        "SELECT 'file.process' AS kind, error_class, error_code, count(*) AS count, max(updated_at) AS last_at, \
                (array_agg(id ORDER BY updated_at DESC))[1] AS sample_id, \
                (array_agg(error_message ORDER BY updated_at DESC))[1] AS sample_message \
         FROM files WHERE status IN ('failed', 'dead_lettered', 'retrying') AND error_code IS NOT NULL \
           AND updated_at > now() - make_interval(secs => $1) \
         GROUP BY error_class, error_code \
         UNION ALL \
         SELECT 'agent.run', error_class, error_code, count(*), max(updated_at), \
                (array_agg(id ORDER BY updated_at DESC))[1], (array_agg(error_message ORDER BY updated_at DESC))[1] \
         FROM executions WHERE status IN ('failed', 'queued') AND error_code IS NOT NULL \
           AND updated_at > now() - make_interval(secs => $1) \
         GROUP BY error_class, error_code \
         ORDER BY count DESC, last_at DESC LIMIT 200",
    )
    .bind(since_secs as f64)
    .fetch_all(&state.pool)
    .await?;
    Ok(ApiJson(FailureGroups { groups }))
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ExecutionSummary {
    pub id: Uuid,
    pub org_id: Uuid,
    pub node_id: Uuid,
    pub status: String,
    pub step: i32,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExecutionsQuery {
    /// Comma-separated statuses; running and awaiting_input by default.
    pub status: Option<String>,
    pub limit: Option<i64>,
}

/// Executions across orgs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ExecutionSummaries {
    pub executions: Vec<ExecutionSummary>,
}

/// Executions across orgs (running and awaiting input by default).
#[utoipa::path(get, path = "/v1/ops/executions", tag = "ops", params(ExecutionsQuery),
    responses((status = 200, description = "Executions", body = ExecutionSummaries)))]
pub async fn executions(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(query): ApiQuery<ExecutionsQuery>,
) -> Result<ApiJson<ExecutionSummaries>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 500"));
    }
    let statuses: Vec<String> = query
        .status
        .as_deref()
        .unwrap_or("running,awaiting_input")
        .split(',')
        .map(|status| status.trim().to_string())
        .filter(|status| !status.is_empty())
        .collect();
    let executions: Vec<ExecutionSummary> = sqlx::query_as(
        "SELECT id, org_id, node_id, status, step, tokens_in, tokens_out, cost_usd, updated_at FROM executions \
         WHERE status = ANY($1) ORDER BY updated_at DESC LIMIT $2",
    )
    .bind(&statuses)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    Ok(ApiJson(ExecutionSummaries { executions }))
}
