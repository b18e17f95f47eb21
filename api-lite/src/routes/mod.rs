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
/// Webhook endpoints of the caller's org and their deliveries.
pub mod webhooks;

use axum::Router;
use axum::routing::{MethodRouter, get, post};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// A keyset-paged list request (`GET /v1/executions`; `GET /v1/files` adds filters).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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

/// A path and the handlers of its methods.
pub type Route = (&'static str, MethodRouter<AppState>);

/// Every route the API serves: the router is built from this table, and the OpenAPI
/// test checks each of its paths and methods against the document.
pub fn table() -> Vec<Route> {
    let mut routes: Vec<Route> = vec![
        ("/health", get(health::health)),
        ("/ready", get(health::ready)),
        ("/openapi.json", get(crate::openapi::document_route)),
        ("/docs", get(crate::openapi::docs_page)),
        ("/v1/files", post(files::create).get(files::list)),
        (
            "/v1/files/{id}",
            get(files::show).patch(files::update).delete(files::delete),
        ),
        ("/v1/files/{id}/confirm", post(files::confirm)),
        ("/v1/files/{id}/reprocess", post(files::reprocess)),
        ("/v1/search", post(search::search)),
        ("/v1/nodes", post(nodes::create)),
        ("/v1/nodes/{id}", get(nodes::show).patch(nodes::update)),
        ("/v1/nodes/{id}/executions", get(nodes::executions)),
        ("/v1/nodes/{id}/execute", post(nodes::execute)),
        ("/v1/executions", get(executions::list)),
        ("/v1/executions/{id}", get(executions::show)),
        ("/v1/executions/{id}/trace", get(executions::trace)),
        ("/v1/executions/{id}/events", get(events::stream)),
        ("/v1/executions/{id}/pause", post(executions::pause)),
        ("/v1/executions/{id}/resume", post(executions::resume)),
        ("/v1/executions/{id}/cancel", post(executions::cancel)),
        ("/v1/executions/{id}/input", post(executions::input)),
        (
            "/v1/executions/{id}/approvals/{input_id}/{decision}",
            post(executions::decide),
        ),
        ("/v1/webhooks", post(webhooks::create).get(webhooks::list)),
        (
            "/v1/webhooks/{id}",
            get(webhooks::show).delete(webhooks::delete),
        ),
        (
            "/v1/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        ),
        ("/v1/webhooks/{id}/deliveries", get(webhooks::deliveries)),
    ];
    routes.extend(crate::ops::table());
    routes
}

pub fn router() -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        })
}
