//! Section 6: the store stage's two ways to write the same chunks: one binary COPY, or
//! one INSERT per row, each in its own transaction (commit included). Once under a model
//! id without a vector index, and once under all-MiniLM-L6-v2's id, whose partial HNSW
//! index Postgres then maintains row by row in both cases.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::config::{ChunkingSettings, EmbeddingSettings};
use uuid::Uuid;
use worker_files::chunk::{Chunk, Chunker};
use worker_files::extract::{Page, normalize_text};
use worker_files::store::{EmbeddedChunk, copy_chunks, insert_chunks_row_by_row, text_sha256};

use crate::corpus::Corpus;
use crate::database::{FreshDatabase, insert_file_row};
use crate::report::{self, Finding, Table, heading};

const DIMENSIONS: usize = 384;

pub async fn run(corpus: &Corpus, rows: usize) -> anyhow::Result<Vec<Finding>> {
    heading(&format!(
        "Store stage: binary COPY vs row-by-row INSERT, {rows} chunks with {DIMENSIONS}-dim vectors, one transaction each"
    ));
    let chunks = corpus_chunks(corpus, rows)?;
    let mut random = StdRng::seed_from_u64(7);
    let vectors: Vec<Vec<f32>> = (0..rows).map(|_| random_unit_vector(&mut random)).collect();
    let embedded: Vec<EmbeddedChunk<'_>> = chunks
        .iter()
        .zip(&vectors)
        .map(|(chunk, vector)| EmbeddedChunk {
            chunk,
            text_sha256: text_sha256(&chunk.text),
            embedding: vector,
        })
        .collect();
    let text_bytes: usize = chunks.iter().map(|chunk| chunk.text.len()).sum();

    let database = FreshDatabase::create("copy", 2).await?;
    let org_id = Uuid::now_v7();
    let mut table = Table::new(
        &format!(
            "{rows} rows, {:.0} bytes of text per row on average",
            text_bytes as f64 / rows.max(1) as f64
        ),
        &[
            "vector index",
            "method",
            "best of 2, s",
            "rows/s",
            "COPY speed-up",
        ],
    );
    let mut findings = Vec::new();
    for (index_label, model_id) in [
        ("none", "bench-stand-in"),
        ("HNSW (all-minilm-l6-v2)", "all-minilm-l6-v2"),
    ] {
        // Best of two rounds, the second in the opposite order, so neither method always
        // meets the bigger table (and index).
        let mut copy_seconds = f64::MAX;
        let mut insert_seconds = f64::MAX;
        for round in 0..2 {
            let methods = if round == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for use_copy in methods {
                let file_id = Uuid::now_v7();
                insert_file_row(
                    &database.pool,
                    file_id,
                    org_id,
                    "copy-bench",
                    "text/plain",
                    0,
                )
                .await?;
                let started = Instant::now();
                let mut transaction = database.pool.begin().await?;
                if use_copy {
                    copy_chunks(&mut transaction, org_id, file_id, model_id, &embedded).await?;
                } else {
                    insert_chunks_row_by_row(
                        &mut transaction,
                        org_id,
                        file_id,
                        model_id,
                        &embedded,
                    )
                    .await?;
                }
                transaction.commit().await?;
                let elapsed = started.elapsed().as_secs_f64();
                if use_copy {
                    copy_seconds = copy_seconds.min(elapsed);
                } else {
                    insert_seconds = insert_seconds.min(elapsed);
                }
            }
        }
        for (method, elapsed, speed_up) in [
            ("binary COPY", copy_seconds, "-".to_string()),
            (
                "INSERT per row",
                insert_seconds,
                report::ratio(insert_seconds / copy_seconds),
            ),
        ] {
            table.row(vec![
                index_label.to_string(),
                method.to_string(),
                report::seconds(elapsed),
                report::rate(rows as f64, elapsed),
                speed_up,
            ]);
        }
        findings.push(Finding {
            what: format!("Store {rows} chunks, vector index: {index_label} (rows/s)"),
            ours: format!("COPY {}", report::rate(rows as f64, copy_seconds)),
            reference: format!("INSERT {}", report::rate(rows as f64, insert_seconds)),
            comparison: format!(
                "COPY {} faster",
                report::ratio(insert_seconds / copy_seconds)
            ),
            target: "COPY faster".into(),
            met: Some(copy_seconds < insert_seconds),
        });
    }
    table.print();
    database.drop_now().await?;
    Ok(findings)
}

/// `rows` real chunks (200/20 tokens, the fleet's defaults) from the corpus text,
/// numbered 0.. so they can share one file id.
fn corpus_chunks(corpus: &Corpus, rows: usize) -> anyhow::Result<Vec<Chunk>> {
    let settings = EmbeddingSettings {
        model_dir: testkit::model_dir(),
        ..EmbeddingSettings::default()
    };
    let chunking = ChunkingSettings::default();
    let tokenizer = shared::embedders::chunk_tokenizer(&settings).map_err(anyhow::Error::msg)?;
    let chunker = Chunker::new(tokenizer, chunking.max_tokens, chunking.overlap_tokens)?;
    let mut chunks = Vec::with_capacity(rows);
    for file in corpus.pdfs() {
        let page = Page::new(Some(1), normalize_text(&corpus.text_of(&file.stem)?));
        for chunk in chunker.chunk(&[page]) {
            if chunks.len() == rows {
                return Ok(chunks);
            }
            chunks.push(Chunk {
                index: chunks.len() as u32,
                ..chunk
            });
        }
    }
    anyhow::ensure!(
        chunks.len() == rows,
        "the corpus has only {} chunks",
        chunks.len()
    );
    Ok(chunks)
}

fn random_unit_vector(random: &mut StdRng) -> Vec<f32> {
    let mut vector: Vec<f32> = (0..DIMENSIONS)
        .map(|_| random.gen_range(-1.0..1.0))
        .collect();
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    for value in &mut vector {
        *value /= norm;
    }
    vector
}
