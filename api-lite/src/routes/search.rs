//! Search over the caller's chunks: by meaning, by words or both (the query itself is
//! `shared::search`), within the files a filter picks.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use shared::file_filter::{FileFilter, FilterInput};
use shared::search::{SearchError, SearchMode, SearchOutcome, SearchQuery, search_chunks};
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
    /// `vector`, `text` or `hybrid`; hybrid when left out and a model can embed the query.
    pub mode: Option<SearchMode>,
    pub file_ids: Option<Vec<Uuid>>,
    /// One content type or a list of them.
    pub content_type: Option<OneOrMany>,
    pub name_prefix: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// `{"key": value}` (equality) and `{"key": {"in": [values]}}` on top-level keys.
    pub metadata: Option<Value>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

fn default_top_k() -> i64 {
    5
}

/// Vector, text or hybrid search over the caller's chunks, within the files a filter picks.
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
    let filter = FileFilter::try_from(FilterInput {
        file_ids: request.file_ids,
        content_types: request.content_type.map(OneOrMany::into_vec),
        name_prefix: request.name_prefix,
        created_after: request.created_after,
        created_before: request.created_before,
        metadata: request.metadata,
    })
    .map_err(|error| ApiError::bad_request("invalid_filter", error.to_string()))?;
    let outcome = search_chunks(
        &state.pool,
        &state.embedders,
        caller.org_id,
        &SearchQuery {
            text: query,
            top_k: request.top_k,
            mode: request.mode,
            filter: &filter,
        },
    )
    .await
    .map_err(|error| match error {
        SearchError::Database(error) => ApiError::from(error),
        SearchError::Embedding(message) => ApiError::unavailable(Dependency::Embedding, message),
    })?;
    Ok(ApiJson(outcome))
}
