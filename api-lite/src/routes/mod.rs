//! The HTTP routes, one module per resource.

/// Executions: status, trace, live events, control, human input and approvals.
pub mod executions;
/// Upload, confirm, inspect, list, delete and reprocess files.
pub mod files;
/// Liveness and readiness.
pub mod health;
/// Nodes (agent tasks) and starting executions on them.
pub mod nodes;
/// Semantic search over the caller's chunks.
pub mod search;

use axum::Router;
use axum::routing::{get, post};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/v1/files", post(files::create).get(files::list))
        .route("/v1/files/{id}", get(files::show).delete(files::delete))
        .route("/v1/files/{id}/confirm", post(files::confirm))
        .route("/v1/files/{id}/reprocess", post(files::reprocess))
        .route("/v1/search", post(search::search))
        .route("/v1/nodes", post(nodes::create))
        .route("/v1/nodes/{id}", get(nodes::show))
        .route("/v1/nodes/{id}/execute", post(nodes::execute))
        .route("/v1/executions", get(executions::list))
        .route("/v1/executions/{id}", get(executions::show))
        .route("/v1/executions/{id}/trace", get(executions::trace))
        .route("/v1/executions/{id}/events", get(executions::events))
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
