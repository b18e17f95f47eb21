//! Search over an org's chunks, shared by `POST /v1/search` and the agent's
//! `search_files` tool: by meaning (vectors), by words (Postgres full-text search), or
//! both fused by reciprocal rank ([`SearchMode`]).
//!
//! - **Vector:** each file's chunks are searched with the model they were embedded with,
//!   so the query is embedded once per model the caller can search with (one, or two
//!   during a model switch, when the files not yet re-embedded keep answering with their
//!   old model).
//! - **Text:** `chunks.search_vector` (English lexemes, filled by a trigger) matched
//!   against the query's lexemes, any of them, ranked by `ts_rank`. It needs no model, so
//!   it also finds files whose model cannot embed a query here. Lexemes found in many
//!   chunks still count in the rank but pick no candidates while rarer ones do
//!   ([`COMMON_LEXEME_CHUNKS`]): ranking every chunk that holds "use" or "version" was
//!   most of a long question's time.
//! - **Hybrid** (the default when a model can embed the query): both lists, fused by
//!   reciprocal rank, `sum(1 / (60 + rank))`. Each hit says why it matched: its vector
//!   similarity and rank, its text score and rank, and the fused score.
//!
//! The query is embedded before a database connection is taken: embedding can take a
//! while (a CPU model waits its turn, a remote one answers slowly), and a connection held
//! meanwhile would starve every other request of the pool. Then one REPEATABLE READ
//! read-only transaction reads the model list and every leg's chunks, so a file switching
//! models between two statements is never missed (`worker-files/tests/model_switch.rs`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::embed::Embedder;
use crate::file_filter::FileFilter;

/// The text search configuration of `chunks.search_vector` (its trigger, migration 0008)
/// and of every query against it; both must agree for the index to match.
pub const TEXT_SEARCH_CONFIG: &str = "english";

/// The `k` of reciprocal-rank fusion: a hit ranked `r` in a list adds `1 / (k + r)`.
/// 60 is the constant of the original paper (Cormack et al., 2009) and of most engines.
pub const RRF_K: f64 = 60.0;

/// How deep each list goes before fusion (or `top_k`, when larger). Shallow on purpose:
/// with 50 per leg, chunks that both legs rank middling (say 20th and 5th) outscored one
/// leg's first hit, and hit@5 of the retrieval benchmark fell to 84.7 % against 87.5 %
/// for LlamaIndex's fusion of each retriever's top 10 (bench/README.md, "Search").
pub const FUSION_CANDIDATES: i64 = 10;

/// A filtered vector search over at most this many chunks is exact (every distance
/// computed) instead of walking the HNSW graph: a graph walk that discards most of what
/// it visits can come back short, and an exact scan this small takes milliseconds.
pub const EXACT_SEARCH_MAX_CHUNKS: i64 = 10_000;

/// A lexeme that Postgres' statistics of `chunks.search_vector` expect in at least this
/// many chunks is common: it adds to a chunk's text score but does not make a chunk a
/// candidate, unless the query has no rarer lexeme or the rarer ones find fewer than the
/// leg's depth. The text leg's cost is `ts_rank` over every candidate; over the
/// benchmark's 10,002 chunks, the p95 of a text search fell from 49 to 9 ms with this
/// bound, and hit@5 rose from 88.7 to 89.2 % (bench/README.md, "Search").
pub const COMMON_LEXEME_CHUNKS: f64 = 200.0;

/// How long one database's list of common lexemes is reused before it is read again
/// (`ANALYZE`, by autovacuum, changes it slowly).
const COMMON_LEXEMES_TTL: Duration = Duration::from_secs(60);

/// What `vector_unavailable` says when the query could not be embedded.
pub const VECTOR_UNAVAILABLE: &str = "the embedding model is unavailable; searched by text only";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Vector,
    Text,
    Hybrid,
}

/// What to search for.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    pub text: &'a str,
    pub top_k: i64,
    /// `None`: hybrid when a model can embed the query, else text.
    pub mode: Option<SearchMode>,
    pub filter: &'a FileFilter,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    /// The fused score (hybrid), the cosine similarity (vector) or the text score
    /// (text). Hits are ordered by it, except in text mode: there they keep the text
    /// leg's order (`text_rank`), where a chunk holding one of the query's uncommon words
    /// comes before the chunks holding only its common ones, whatever their scores.
    pub score: f64,
    /// Cosine similarity to the query, when the vector leg found the chunk.
    pub vector_score: Option<f64>,
    /// 1-based position in the vector leg's list.
    pub vector_rank: Option<u32>,
    /// `ts_rank` of the chunk's lexemes against the query's, when the text leg found it.
    pub text_score: Option<f64>,
    /// 1-based position in the text leg's list.
    pub text_rank: Option<u32>,
    /// The reciprocal-rank fusion score (hybrid only).
    pub fused_score: Option<f64>,
    /// The titles of the sections the chunk starts in, outermost first (empty when the
    /// document has no headings); null for chunks stored before extraction recorded them.
    pub heading_path: Option<Vec<String>>,
    /// Whether the chunk's text came from OCR; null for chunks stored before extraction
    /// recorded it.
    pub ocr: Option<bool>,
    pub text: String,
    pub model_id: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchOutcome {
    /// The mode the hits come from.
    pub mode: SearchMode,
    pub hits: Vec<Hit>,
    /// The models the query was embedded with.
    pub models: Vec<String>,
    /// Models some of the files use that no given embedder can embed a query with: their
    /// files are found by text only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsearchable_models: Vec<String>,
    /// Why a search left to its default mode ran on text only: the query could not be
    /// embedded (the embedding endpoint failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector_unavailable: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("embedding the query: {0}")]
    Embedding(String),
}

/// The `top_k` best chunks of `org_id` for the query, within the filter's files.
pub async fn search_chunks(
    pool: &PgPool,
    embedders: &[Arc<dyn Embedder>],
    org_id: Uuid,
    query: &SearchQuery<'_>,
) -> Result<SearchOutcome, SearchError> {
    let mut vector_unavailable = None;
    let (mode, query_vectors) = match query.mode {
        Some(SearchMode::Text) => (SearchMode::Text, HashMap::new()),
        Some(mode) => {
            if embedders.is_empty() {
                return Err(SearchError::Embedding(
                    "no embedding model is configured".into(),
                ));
            }
            (mode, embed_query(embedders, query.text).await?)
        }
        None if embedders.is_empty() => (SearchMode::Text, HashMap::new()),
        None => match embed_query(embedders, query.text).await {
            Ok(vectors) => (SearchMode::Hybrid, vectors),
            Err(error) => {
                // The cause (an endpoint's address, its reply) is logged, never returned.
                tracing::warn!(error = %error, "query not embedded, searching text only");
                vector_unavailable = Some(VECTOR_UNAVAILABLE.to_owned());
                (SearchMode::Text, HashMap::new())
            }
        },
    };
    let depth = match mode {
        SearchMode::Hybrid => query.top_k.max(FUSION_CANDIDATES),
        SearchMode::Vector | SearchMode::Text => query.top_k,
    };

    // Read before the transaction takes its connection: one search holds one at a time.
    let common = if mode == SearchMode::Vector {
        Arc::default()
    } else {
        common_lexemes(pool).await?
    };
    let mut transaction = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *transaction)
        .await?;
    // Filtered HNSW scans keep going until enough rows pass the filter (pgvector 0.8).
    sqlx::query("SET LOCAL hnsw.iterative_scan = relaxed_order")
        .execute(&mut *transaction)
        .await?;
    sqlx::query("SELECT set_config('hnsw.ef_search', $1, true)")
        .bind(depth.clamp(40, 1000).to_string())
        .execute(&mut *transaction)
        .await?;

    let mut searched = Vec::new();
    let mut unsearchable = Vec::new();
    let mut vector_list: Vec<(i64, f64)> = Vec::new();
    if mode != SearchMode::Text {
        let mut models_query = QueryBuilder::<Postgres>::new(
            "SELECT f.embedding_model, COALESCE(sum(f.chunk_count), 0)::int8 FROM files f WHERE f.org_id = ",
        );
        models_query.push_bind(org_id);
        models_query.push(" AND f.embedding_model IS NOT NULL");
        query.filter.push_conditions(&mut models_query);
        models_query.push(" GROUP BY f.embedding_model ORDER BY f.embedding_model");
        let models: Vec<(String, i64)> = models_query
            .build_query_as()
            .fetch_all(&mut *transaction)
            .await?;
        for (model, chunks) in models {
            let Some((dimensions, vector)) = query_vectors.get(&model) else {
                unsearchable.push(model);
                continue;
            };
            let exact = !query.filter.is_empty() && chunks <= EXACT_SEARCH_MAX_CHUNKS;
            let mut statement =
                vector_leg(org_id, &model, *dimensions, vector, query.filter, exact);
            let found: Vec<(i64, f64)> = statement
                .push_bind(depth)
                .build_query_as()
                .fetch_all(&mut *transaction)
                .await?;
            vector_list.extend(found);
            searched.push(model);
        }
        // Models are searched separately: one list, best similarity first.
        vector_list.sort_by(|left, right| right.1.total_cmp(&left.1).then(left.0.cmp(&right.0)));
        vector_list.truncate(depth.max(0) as usize);
    }

    let mut text_list: Vec<(i64, f64)> = Vec::new();
    if mode != SearchMode::Vector {
        text_list = text_leg(&mut transaction, org_id, query, &common, depth).await?;
    }

    let ranked = fuse(mode, &vector_list, &text_list, query.top_k);
    let ids: Vec<i64> = ranked.iter().map(|ranked| ranked.chunk_id).collect();
    let rows: Vec<ChunkRow> = sqlx::query_as(
        "SELECT c.id, c.file_id, f.name AS file_name, c.chunk_index, c.page, c.part, c.byte_start, c.byte_end, c.text, c.model_id, c.heading_path, c.ocr \
         FROM chunks c JOIN files f ON f.id = c.file_id WHERE c.id = ANY($1) AND c.org_id = $2",
    )
    .bind(&ids)
    .bind(org_id)
    .fetch_all(&mut *transaction)
    .await?;
    transaction.commit().await?;

    let mut rows_by_id: HashMap<i64, ChunkRow> =
        rows.into_iter().map(|row| (row.id, row)).collect();
    let hits = ranked
        .into_iter()
        .filter_map(|ranked| {
            let row = rows_by_id.remove(&ranked.chunk_id)?;
            Some(Hit {
                file_id: row.file_id,
                file_name: row.file_name,
                chunk_index: row.chunk_index,
                page: row.page,
                part: row.part,
                byte_start: row.byte_start,
                byte_end: row.byte_end,
                score: ranked.score,
                vector_score: ranked.vector.map(|(_, similarity)| similarity),
                vector_rank: ranked.vector.map(|(rank, _)| rank),
                text_score: ranked.text.map(|(_, score)| score),
                text_rank: ranked.text.map(|(rank, _)| rank),
                fused_score: ranked.fused,
                heading_path: row.heading_path,
                ocr: row.ocr,
                text: row.text,
                model_id: row.model_id,
            })
        })
        .collect();
    Ok(SearchOutcome {
        mode,
        hits,
        models: searched,
        unsearchable_models: unsearchable,
        vector_unavailable,
    })
}

/// The text leg: `(chunk id, ts_rank)`, best first, at most `depth`. Candidates are the
/// chunks holding any of the query's uncommon lexemes, ranked by all of its lexemes; then,
/// when those are fewer than `depth`, the chunks holding only common ones, ranked below
/// them (one statement: Postgres runs the second branch only when the first came short).
async fn text_leg(
    connection: &mut sqlx::PgConnection,
    org_id: Uuid,
    query: &SearchQuery<'_>,
    common: &[String],
    depth: i64,
) -> Result<Vec<(i64, f64)>, SearchError> {
    // Any of the query's lexemes: a question rarely has all its words in one chunk, and
    // the rank rewards the chunks that have more of them. `strip` leaves a tsvector's
    // quoted lexemes, which a tsquery reads the same way.
    let (any, uncommon): (String, String) = sqlx::query_as(
        "SELECT replace(strip(v)::text, ''' ''', ''' | '''), \
                replace(strip(ts_delete(v, $3::text[]))::text, ''' ''', ''' | ''') \
         FROM to_tsvector($1::regconfig, $2) v",
    )
    .bind(TEXT_SEARCH_CONFIG)
    .bind(query.text)
    .bind(common)
    .fetch_one(&mut *connection)
    .await?;
    if any.trim().is_empty() {
        return Ok(Vec::new());
    }
    let branch = |statement: &mut QueryBuilder<'_, Postgres>, candidates: &str, excluded: &str| {
        statement
            .push("(SELECT c.id, ts_rank(c.search_vector, ")
            .push_bind(any.clone())
            .push("::tsquery)::float8 AS text_score FROM chunks c JOIN files f ON f.id = c.file_id AND f.embedding_model = c.model_id WHERE c.org_id = ")
            .push_bind(org_id)
            .push(" AND f.org_id = ")
            .push_bind(org_id)
            .push(" AND c.search_vector @@ ")
            .push_bind(candidates.to_owned())
            .push("::tsquery");
        if !excluded.is_empty() {
            statement
                .push(" AND NOT c.search_vector @@ ")
                .push_bind(excluded.to_owned())
                .push("::tsquery");
        }
        query.filter.push_conditions(statement);
        statement
            .push(" ORDER BY text_score DESC, c.id LIMIT ")
            .push_bind(depth)
            .push(")");
    };
    let mut statement = QueryBuilder::<Postgres>::new("");
    if uncommon.trim().is_empty() || uncommon == any {
        branch(&mut statement, &any, "");
    } else {
        branch(&mut statement, &uncommon, "");
        statement.push(" UNION ALL ");
        branch(&mut statement, &any, &uncommon);
        statement.push(" LIMIT ").push_bind(depth);
    }
    Ok(statement
        .build_query_as()
        .fetch_all(&mut *connection)
        .await?)
}

/// The lexemes of `chunks.search_vector` that the planner's statistics expect in at
/// least [`COMMON_LEXEME_CHUNKS`] chunks (its most common elements, times the table's
/// rows), read at most once a [`COMMON_LEXEMES_TTL`] per database. None before the table
/// is first analyzed: then every lexeme picks candidates.
async fn common_lexemes(pool: &PgPool) -> Result<Arc<Vec<String>>, SearchError> {
    type Cache = Mutex<HashMap<String, (Instant, Arc<Vec<String>>)>>;
    static CACHE: LazyLock<Cache> = LazyLock::new(Default::default);
    let options = pool.connect_options();
    let key = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    );
    if let Some((read_at, lexemes)) = CACHE.lock().expect("cache lock").get(&key)
        && read_at.elapsed() < COMMON_LEXEMES_TTL
    {
        return Ok(lexemes.clone());
    }
    let lexemes: Vec<String> = sqlx::query_scalar(
        "SELECT u.lexeme FROM pg_stats s, \
                unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS u(lexeme, frequency) \
         WHERE s.schemaname = current_schema() AND s.tablename = 'chunks' AND s.attname = 'search_vector' \
           AND u.lexeme IS NOT NULL \
           AND u.frequency * (SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'chunks'::regclass) >= $1",
    )
    .bind(COMMON_LEXEME_CHUNKS)
    .fetch_all(pool)
    .await?;
    let lexemes = Arc::new(lexemes);
    CACHE
        .lock()
        .expect("cache lock")
        .insert(key, (Instant::now(), lexemes.clone()));
    Ok(lexemes)
}

/// The query's vector for each embedder's model, with the model's dimensions.
async fn embed_query(
    embedders: &[Arc<dyn Embedder>],
    text: &str,
) -> Result<HashMap<String, (usize, pgvector::Vector)>, SearchError> {
    let mut vectors = HashMap::new();
    for embedder in embedders {
        let embedded = embedder
            .embed(&[text.to_string()])
            .await
            .map_err(|error| SearchError::Embedding(error.to_string()))?;
        let vector = pgvector::Vector::from(embedded.into_iter().next().unwrap_or_default());
        vectors.insert(
            embedder.model_id().to_string(),
            (embedder.dimensions(), vector),
        );
    }
    Ok(vectors)
}

/// The vector leg for one model: `(chunk id, cosine similarity)`, best first; the caller
/// binds the limit last. The cast matches the model's partial HNSW index expression; the
/// dimension is the embedder's own number, never user input.
fn vector_leg<'args>(
    org_id: Uuid,
    model: &str,
    dimensions: usize,
    vector: &pgvector::Vector,
    filter: &FileFilter,
    exact: bool,
) -> QueryBuilder<'args, Postgres> {
    let distance = format!("c.embedding::vector({dimensions}) <=> ");
    let mut statement = QueryBuilder::<Postgres>::new("");
    if exact {
        // A materialized CTE cannot be ordered by the HNSW index: every distance is computed.
        statement.push("WITH candidates AS MATERIALIZED (SELECT c.id, ");
    } else {
        statement.push("SELECT c.id, 1 - (");
    }
    statement
        .push(&distance)
        .push_bind(vector.clone())
        .push(format!("::vector({dimensions})"));
    if exact {
        statement.push(" AS distance");
    } else {
        statement.push(")::float8 AS similarity");
    }
    statement
        .push(" FROM chunks c JOIN files f ON f.id = c.file_id AND f.embedding_model = c.model_id WHERE c.model_id = ")
        .push_bind(model.to_string())
        .push(" AND c.org_id = ")
        .push_bind(org_id)
        .push(" AND f.org_id = ")
        .push_bind(org_id);
    filter.push_conditions(&mut statement);
    if exact {
        statement.push(
            ") SELECT id, (1 - distance)::float8 FROM candidates ORDER BY distance, id LIMIT ",
        );
    } else {
        statement
            .push(" ORDER BY ")
            .push(&distance)
            .push_bind(vector.clone())
            .push(format!("::vector({dimensions}) LIMIT "));
    }
    statement
}

#[derive(Debug, sqlx::FromRow)]
struct ChunkRow {
    id: i64,
    file_id: Uuid,
    file_name: String,
    chunk_index: i32,
    page: Option<i32>,
    part: Option<String>,
    byte_start: i32,
    byte_end: i32,
    text: String,
    model_id: String,
    heading_path: Option<Vec<String>>,
    ocr: Option<bool>,
}

/// A chunk in the final order, with what each leg said of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub chunk_id: i64,
    pub score: f64,
    /// (1-based rank, cosine similarity)
    pub vector: Option<(u32, f64)>,
    /// (1-based rank, text score)
    pub text: Option<(u32, f64)>,
    pub fused: Option<f64>,
}

/// Orders the legs' lists (each best first) for `mode` and keeps `top_k`. One leg keeps
/// its list's order. Hybrid sums `1 / (RRF_K + rank)` over the lists a chunk is in; ties
/// go to the better vector similarity, then the lower chunk id, so the order is
/// deterministic.
pub fn fuse(
    mode: SearchMode,
    vector_list: &[(i64, f64)],
    text_list: &[(i64, f64)],
    top_k: i64,
) -> Vec<Ranked> {
    let mut by_chunk: HashMap<i64, Ranked> = HashMap::new();
    let mut order: Vec<i64> = Vec::new();
    for (position, (chunk_id, similarity)) in vector_list.iter().enumerate() {
        let entry = by_chunk.entry(*chunk_id).or_insert_with(|| {
            order.push(*chunk_id);
            Ranked {
                chunk_id: *chunk_id,
                score: 0.0,
                vector: None,
                text: None,
                fused: None,
            }
        });
        entry
            .vector
            .get_or_insert((position as u32 + 1, *similarity));
    }
    for (position, (chunk_id, text_score)) in text_list.iter().enumerate() {
        let entry = by_chunk.entry(*chunk_id).or_insert_with(|| {
            order.push(*chunk_id);
            Ranked {
                chunk_id: *chunk_id,
                score: 0.0,
                vector: None,
                text: None,
                fused: None,
            }
        });
        entry.text.get_or_insert((position as u32 + 1, *text_score));
    }
    let mut ranked: Vec<Ranked> = order
        .into_iter()
        .filter_map(|chunk_id| by_chunk.remove(&chunk_id))
        .filter_map(|mut entry| {
            match mode {
                SearchMode::Vector => entry.score = entry.vector?.1,
                SearchMode::Text => entry.score = entry.text?.1,
                SearchMode::Hybrid => {
                    let fused: f64 = [entry.vector, entry.text]
                        .into_iter()
                        .flatten()
                        .map(|(rank, _)| 1.0 / (RRF_K + f64::from(rank)))
                        .sum();
                    entry.fused = Some(fused);
                    entry.score = fused;
                }
            }
            Some(entry)
        })
        .collect();
    // One leg: its own order (the text leg puts chunks with an uncommon word of the
    // query first, whatever their score).
    if mode != SearchMode::Hybrid {
        ranked.truncate(top_k.max(0) as usize);
        return ranked;
    }
    ranked.sort_by(|left, right| {
        right
            .score
            .total_cmp(&left.score)
            .then_with(|| {
                let left_similarity = left.vector.map_or(f64::NEG_INFINITY, |(_, value)| value);
                let right_similarity = right.vector.map_or(f64::NEG_INFINITY, |(_, value)| value);
                right_similarity.total_cmp(&left_similarity)
            })
            .then(left.chunk_id.cmp(&right.chunk_id))
    });
    ranked.truncate(top_k.max(0) as usize);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_sums_reciprocal_ranks_of_both_lists() {
        let vector = [(1, 0.9), (2, 0.8), (3, 0.7)];
        let text = [(3, 0.5), (4, 0.4)];
        let ranked = fuse(SearchMode::Hybrid, &vector, &text, 10);
        let order: Vec<i64> = ranked.iter().map(|hit| hit.chunk_id).collect();
        // 3 is third by vector and first by text: 1/63 + 1/61 beats 1/61 alone.
        assert_eq!(order, [3, 1, 2, 4]);
        let three = &ranked[0];
        assert_eq!(three.vector, Some((3, 0.7)));
        assert_eq!(three.text, Some((1, 0.5)));
        let expected = 1.0 / 63.0 + 1.0 / 61.0;
        assert!((three.fused.unwrap() - expected).abs() < 1e-12);
        assert_eq!(three.score, three.fused.unwrap());
        // 1 (vector rank 1) and 4 (text rank 2) are found by one leg each.
        assert_eq!(ranked[1].text, None);
        assert_eq!(ranked[3].vector, None);
    }

    #[test]
    fn a_tie_goes_to_the_better_vector_similarity_then_the_lower_id() {
        // 7 is first by vector, 8 first by text: equal fused scores.
        let ranked = fuse(SearchMode::Hybrid, &[(7, 0.3)], &[(8, 9.0)], 10);
        assert_eq!(ranked[0].chunk_id, 7);
    }

    #[test]
    fn one_leg_keeps_its_own_order() {
        // The text leg puts a chunk with an uncommon word (score 0.02) before one with
        // only common words (0.05); its SQL breaks score ties by id.
        let ranked = fuse(
            SearchMode::Text,
            &[],
            &[(9, 0.02), (3, 0.05), (4, 0.05)],
            10,
        );
        assert_eq!(
            ranked.iter().map(|hit| hit.chunk_id).collect::<Vec<_>>(),
            [9, 3, 4]
        );
        assert_eq!(ranked[0].score, 0.02);
    }

    #[test]
    fn single_modes_keep_their_own_scores_and_top_k() {
        let ranked = fuse(SearchMode::Vector, &[(1, 0.9), (2, 0.8), (3, 0.1)], &[], 2);
        assert_eq!(ranked.len(), 2);
        assert_eq!(ranked[0].score, 0.9);
        assert_eq!(ranked[0].fused, None);
        let ranked = fuse(SearchMode::Text, &[], &[(5, 0.2), (6, 0.1)], 5);
        assert_eq!(ranked[1].score, 0.1);
        assert_eq!(ranked[1].text, Some((2, 0.1)));
    }

    #[test]
    fn modes_spell_as_the_api_takes_them() {
        let mode: SearchMode = serde_json::from_str("\"hybrid\"").unwrap();
        assert_eq!(mode, SearchMode::Hybrid);
        assert!(serde_json::from_str::<SearchMode>("\"fuzzy\"").is_err());
    }
}
