//! Semantic search over the caller's chunks (the query itself is `shared::search`).

use axum::extract::State;
use serde::Deserialize;
use shared::search::{SearchError, SearchOutcome, search_chunks};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, Dependency};
use crate::extract::ApiJson;
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    #[serde(default = "default_top_k")]
    pub top_k: i64,
    pub file_ids: Option<Vec<Uuid>>,
}

fn default_top_k() -> i64 {
    5
}

/// Semantic search over the caller's chunks.
#[utoipa::path(post, path = "/v1/search", tag = "search", request_body = SearchRequest,
    responses((status = 200, description = "The best chunks, best first", body = SearchOutcome)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<SearchRequest>,
) -> Result<ApiJson<SearchOutcome>, ApiError> {
    let query = request.query.trim();
    if query.is_empty() || query.len() > 4096 {
        return Err(ApiError::invalid("query must be 1 to 4096 bytes"));
    }
    if !(1..=100).contains(&request.top_k) {
        return Err(ApiError::invalid("top_k must be between 1 and 100"));
    }
    let outcome = search_chunks(
        &state.pool,
        &state.embedders,
        caller.org_id,
        query,
        request.top_k,
        request.file_ids.as_deref(),
    )
    .await
    .map_err(|error| match error {
        SearchError::Database(error) => ApiError::from(error),
        SearchError::Embedding(message) => ApiError::unavailable(Dependency::Embedding, message),
    })?;
    Ok(ApiJson(outcome))
}
