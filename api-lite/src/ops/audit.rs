//! The audit log: who did what, when, to what, and how many. Entries are written with
//! [`record`] in the transaction of the action they describe.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::Operator;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;

pub use shared::audit::record;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub count: i32,
    pub details: Value,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub limit: Option<i64>,
    pub action: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<ApiJson<Value>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let entries: Vec<AuditEntry> = sqlx::query_as(
        "SELECT id, actor, action, target, count, details, at FROM audit_log \
         WHERE ($1::text IS NULL OR action = $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(&query.action)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    Ok(ApiJson(json!({ "entries": entries })))
}
