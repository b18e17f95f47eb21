//! Semantic search over the caller's chunks.
//!
//! Each file's chunks are searched with the model its chunks were embedded with, so the
//! query is embedded once per model in use. During a model switch the files not yet
//! re-embedded keep answering with their old model.

use std::collections::HashMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Hit {
    pub file_id: Uuid,
    pub file_name: String,
    pub chunk_index: i32,
    pub page: Option<i32>,
    pub byte_start: i32,
    pub byte_end: i32,
    pub score: f64,
    pub text: String,
    pub model_id: String,
}

#[derive(Debug, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    /// The models the query was embedded with.
    pub models: Vec<String>,
    /// Models some of the files use that this API cannot embed a query with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsearchable_models: Vec<String>,
}

pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<SearchRequest>,
) -> Result<ApiJson<SearchResponse>, ApiError> {
    let query = request.query.trim();
    if query.is_empty() || query.len() > 4096 {
        return Err(ApiError::invalid("query must be 1 to 4096 bytes"));
    }
    if !(1..=100).contains(&request.top_k) {
        return Err(ApiError::invalid("top_k must be between 1 and 100"));
    }
    let models: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT embedding_model FROM files WHERE org_id = $1 AND embedding_model IS NOT NULL AND ($2::uuid[] IS NULL OR id = ANY($2))",
    )
    .bind(caller.org_id)
    .bind(&request.file_ids)
    .fetch_all(&state.pool)
    .await?;
    let embedders: HashMap<&str, _> = state
        .embedders
        .iter()
        .map(|embedder| (embedder.model_id(), embedder))
        .collect();
    let mut hits: Vec<Hit> = Vec::new();
    let mut searched = Vec::new();
    let mut unsearchable = Vec::new();
    for model in models {
        let Some(embedder) = embedders.get(model.as_str()) else {
            unsearchable.push(model);
            continue;
        };
        let vectors = embedder
            .embed(&[query.to_string()])
            .await
            .map_err(|error| ApiError::Unavailable(format!("embedding the query: {error}")))?;
        let vector = pgvector::Vector::from(vectors.into_iter().next().unwrap_or_default());
        let dimensions = embedder.dimensions();
        // The cast matches the model's partial HNSW index expression; the dimension is the
        // embedder's own number, never user input.
        let statement = format!(
            "SELECT c.file_id, f.name AS file_name, c.chunk_index, c.page, c.byte_start, c.byte_end, c.text, c.model_id, \
                    (1 - (c.embedding::vector({dimensions}) <=> $1::vector({dimensions})))::float8 AS score \
             FROM chunks c JOIN files f ON f.id = c.file_id AND f.embedding_model = c.model_id \
             WHERE c.model_id = $2 AND c.org_id = $3 AND ($4::uuid[] IS NULL OR c.file_id = ANY($4)) \
             ORDER BY c.embedding::vector({dimensions}) <=> $1::vector({dimensions}) LIMIT $5"
        );
        let mut transaction = state.pool.begin().await?;
        // Filtered HNSW scans keep going until enough rows pass the filter (pgvector 0.8).
        sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order")
            .execute(&mut *transaction)
            .await?;
        let model_hits: Vec<Hit> = sqlx::query_as(&statement)
            .bind(vector)
            .bind(&model)
            .bind(caller.org_id)
            .bind(&request.file_ids)
            .bind(request.top_k)
            .fetch_all(&mut *transaction)
            .await?;
        transaction.commit().await?;
        hits.extend(model_hits);
        searched.push(model);
    }
    hits.sort_by(|left, right| right.score.total_cmp(&left.score));
    hits.truncate(request.top_k as usize);
    Ok(ApiJson(SearchResponse {
        hits,
        models: searched,
        unsearchable_models: unsearchable,
    }))
}
