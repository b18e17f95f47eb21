//! The HTTP routes, one module per resource.

/// The live trace of an execution as Server-Sent Events.
pub mod events;
/// Executions: status, trace, control, human input and approvals.
pub mod executions;
/// Upload, confirm, inspect, list, update metadata, delete and reprocess files.
pub mod files;
/// Liveness and readiness.
pub mod health;
/// Nodes (agent tasks) and starting executions on them.
pub mod nodes;
/// Vector, text and hybrid search over the caller's chunks, with file filters.
pub mod search;

use axum::Router;
use axum::routing::{get, post};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// A keyset-paged list request (`GET /v1/executions`; `GET /v1/files` adds filters).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

/// Checks a list request: a page size of 1 to 500 (50 by default) and, when given, a
/// status from `statuses`. Returns the page size.
pub(crate) fn list_limit(
    limit: Option<i64>,
    status: Option<&str>,
    statuses: &[&str],
) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 500"));
    }
    if let Some(status) = status
        && !statuses.contains(&status)
    {
        return Err(ApiError::invalid(format!(
            "status must be one of {}",
            statuses.join(", ")
        )));
    }
    Ok(limit)
}

/// Keyset paging: the query fetched `limit + 1` rows; drop the extra one and return the
/// cursor of the next page (the last id shown), if there is one.
pub(crate) fn next_page<T>(rows: &mut Vec<T>, limit: i64, id: impl Fn(&T) -> Uuid) -> Option<Uuid> {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(id)
    } else {
        None
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/v1/files", post(files::create).get(files::list))
        .route(
            "/v1/files/{id}",
            get(files::show).patch(files::update).delete(files::delete),
        )
        .route("/v1/files/{id}/confirm", post(files::confirm))
        .route("/v1/files/{id}/reprocess", post(files::reprocess))
        .route("/v1/search", post(search::search))
        .route("/v1/nodes", post(nodes::create))
        .route("/v1/nodes/{id}", get(nodes::show))
        .route("/v1/nodes/{id}/execute", post(nodes::execute))
        .route("/v1/executions", get(executions::list))
        .route("/v1/executions/{id}", get(executions::show))
        .route("/v1/executions/{id}/trace", get(executions::trace))
        .route("/v1/executions/{id}/events", get(events::stream))
        .route("/v1/executions/{id}/pause", post(executions::pause))
        .route("/v1/executions/{id}/resume", post(executions::resume))
        .route("/v1/executions/{id}/cancel", post(executions::cancel))
        .route("/v1/executions/{id}/input", post(executions::input))
        .route(
            "/v1/executions/{id}/approvals/{input_id}/{decision}",
            post(executions::decide),
        )
        .merge(crate::ops::router())
}
