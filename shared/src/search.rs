//! Semantic search over an org's chunks, shared by `POST /v1/search` and the agent's
//! `search_files` tool.
//!
//! Each file's chunks are searched with the model its chunks were embedded with, so the
//! query is embedded once per model the caller can search with (one, or two during a
//! model switch, when the files not yet re-embedded keep answering with their old model).
//!
//! The query is embedded before a database connection is taken: embedding can take a
//! while (a CPU model waits its turn, a remote one answers slowly), and a connection held
//! meanwhile would starve every other request of the pool.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::embed::Embedder;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Hit {
    pub file_id: Uuid,
    pub file_name: String,
    pub chunk_index: i32,
    pub page: Option<i32>,
    /// Where in the document the text comes from (`table`, `text_box`, `footnote`,
    /// `endnote`, `comment`, `header`, `footer`); absent for body text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<String>,
    pub byte_start: i32,
    pub byte_end: i32,
    pub score: f64,
    pub text: String,
    pub model_id: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchOutcome {
    pub hits: Vec<Hit>,
    /// The models the query was embedded with.
    pub models: Vec<String>,
    /// Models some of the files use that no given embedder can embed a query with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsearchable_models: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("embedding the query: {0}")]
    Embedding(String),
}

/// The `top_k` best chunks of `org_id` for `query`, optionally within `file_ids`.
pub async fn search_chunks(
    pool: &PgPool,
    embedders: &[Arc<dyn Embedder>],
    org_id: Uuid,
    query: &str,
    top_k: i64,
    file_ids: Option<&[Uuid]>,
) -> Result<SearchOutcome, SearchError> {
    let mut query_vectors: HashMap<&str, (usize, pgvector::Vector)> = HashMap::new();
    for embedder in embedders {
        let vectors = embedder
            .embed(&[query.to_string()])
            .await
            .map_err(|error| SearchError::Embedding(error.to_string()))?;
        let vector = pgvector::Vector::from(vectors.into_iter().next().unwrap_or_default());
        query_vectors.insert(embedder.model_id(), (embedder.dimensions(), vector));
    }
    // One snapshot for the model list and every per-model query: a file switching
    // models between them would otherwise be missed by both (its old chunks gone, its
    // new model not searched).
    let mut transaction = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *transaction)
        .await?;
    // Filtered HNSW scans keep going until enough rows pass the filter (pgvector 0.8).
    sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order")
        .execute(&mut *transaction)
        .await?;
    let models: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT embedding_model FROM files WHERE org_id = $1 AND embedding_model IS NOT NULL AND ($2::uuid[] IS NULL OR id = ANY($2))",
    )
    .bind(org_id)
    .bind(file_ids)
    .fetch_all(&mut *transaction)
    .await?;
    let mut hits: Vec<Hit> = Vec::new();
    let mut searched = Vec::new();
    let mut unsearchable = Vec::new();
    for model in models {
        let Some((dimensions, vector)) = query_vectors.get(model.as_str()) else {
            unsearchable.push(model);
            continue;
        };
        // The cast matches the model's partial HNSW index expression; the dimension is the
        // embedder's own number, never user input.
        let statement = format!(
            "SELECT c.file_id, f.name AS file_name, c.chunk_index, c.page, c.part, c.byte_start, c.byte_end, c.text, c.model_id, \
                    (1 - (c.embedding::vector({dimensions}) <=> $1::vector({dimensions})))::float8 AS score \
             FROM chunks c JOIN files f ON f.id = c.file_id AND f.embedding_model = c.model_id \
             WHERE c.model_id = $2 AND c.org_id = $3 AND ($4::uuid[] IS NULL OR c.file_id = ANY($4)) \
             ORDER BY c.embedding::vector({dimensions}) <=> $1::vector({dimensions}) LIMIT $5"
        );
        let model_hits: Vec<Hit> = sqlx::query_as(&statement)
            .bind(vector)
            .bind(&model)
            .bind(org_id)
            .bind(file_ids)
            .bind(top_k)
            .fetch_all(&mut *transaction)
            .await?;
        hits.extend(model_hits);
        searched.push(model);
    }
    transaction.commit().await?;
    hits.sort_by(|left, right| right.score.total_cmp(&left.score));
    hits.truncate(top_k.max(0) as usize);
    Ok(SearchOutcome {
        hits,
        models: searched,
        unsearchable_models: unsearchable,
    })
}
