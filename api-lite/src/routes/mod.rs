//! The HTTP routes, one module per resource.

/// Upload, confirm, inspect, list, delete and reprocess files.
pub mod files;
/// Liveness and readiness.
pub mod health;
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
}
