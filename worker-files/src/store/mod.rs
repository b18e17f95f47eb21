//! Stores a file's chunks and vectors: one transaction, fenced by the lease, that
//! replaces the file's chunks (of every model: the file switches to the new model in the
//! same commit) and marks the file ready. Running it twice leaves one set of chunks.

/// The binary COPY encoder.
pub mod copy;

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::chunk::Chunk;
use copy::BinaryCopy;

const COPY_CHUNKS: &str = "COPY chunks (org_id, file_id, model_id, chunk_index, page, part, byte_start, byte_end, token_count, text_sha256, text, embedding, heading_path, ocr) FROM STDIN WITH (FORMAT binary)";

/// A chunk with its vector, ready to store.
pub struct EmbeddedChunk<'a> {
    pub chunk: &'a Chunk,
    pub text_sha256: [u8; 32],
    pub embedding: &'a [f32],
}

pub fn text_sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Writes the chunks with binary COPY on `connection` (inside the caller's transaction).
pub async fn copy_chunks(
    connection: &mut PgConnection,
    org_id: Uuid,
    file_id: Uuid,
    model_id: &str,
    chunks: &[EmbeddedChunk<'_>],
) -> sqlx::Result<()> {
    let mut copy = BinaryCopy::new();
    for embedded in chunks {
        let chunk = embedded.chunk;
        copy.start_row(14);
        copy.uuid(org_id);
        copy.uuid(file_id);
        copy.text(model_id);
        copy.int4(chunk.index as i32);
        copy.optional_int4(chunk.page.map(|page| page as i32));
        copy.optional_text(chunk.part.map(|part| part.as_str()));
        copy.int4(chunk.byte_start as i32);
        copy.int4(chunk.byte_end as i32);
        copy.int4(chunk.token_count as i32);
        copy.bytea(&embedded.text_sha256);
        copy.text(&chunk.text);
        copy.vector(embedded.embedding);
        copy.text_array(&chunk.heading_path);
        copy.boolean(chunk.ocr);
    }
    let mut sink = connection.copy_in_raw(COPY_CHUNKS).await?;
    sink.send(copy.finish()).await?;
    sink.finish().await?;
    Ok(())
}

/// The same rows with one INSERT each: only for the benchmark's COPY-vs-INSERT ratio.
pub async fn insert_chunks_row_by_row(
    connection: &mut PgConnection,
    org_id: Uuid,
    file_id: Uuid,
    model_id: &str,
    chunks: &[EmbeddedChunk<'_>],
) -> sqlx::Result<()> {
    for embedded in chunks {
        let chunk = embedded.chunk;
        sqlx::query(
            "INSERT INTO chunks (org_id, file_id, model_id, chunk_index, page, part, byte_start, byte_end, token_count, text_sha256, text, embedding, heading_path, ocr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(org_id)
        .bind(file_id)
        .bind(model_id)
        .bind(chunk.index as i32)
        .bind(chunk.page.map(|page| page as i32))
        .bind(chunk.part.map(|part| part.as_str()))
        .bind(chunk.byte_start as i32)
        .bind(chunk.byte_end as i32)
        .bind(chunk.token_count as i32)
        .bind(&embedded.text_sha256[..])
        .bind(&chunk.text)
        .bind(pgvector::Vector::from(embedded.embedding.to_vec()))
        .bind(&chunk.heading_path)
        .bind(chunk.ocr)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Vectors already stored for identical text (same org and model), keyed by text hash.
pub async fn reusable_embeddings(
    pool: &PgPool,
    org_id: Uuid,
    model_id: &str,
    hashes: &[Vec<u8>],
) -> sqlx::Result<Vec<(Vec<u8>, pgvector::Vector)>> {
    sqlx::query_as(
        "SELECT DISTINCT ON (text_sha256) text_sha256, embedding FROM chunks \
         WHERE org_id = $1 AND model_id = $2 AND text_sha256 = ANY($3)",
    )
    .bind(org_id)
    .bind(model_id)
    .bind(hashes)
    .fetch_all(pool)
    .await
}
