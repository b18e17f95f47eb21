//! Section 4: local all-MiniLM-L6-v2 (candle, CPU) throughput on ~60-token chunks in
//! batches of 32, as sentence-transformers' reference was measured; and, for context, on
//! the pipeline's own 200-token chunks.

use std::time::Instant;

use shared::config::EmbeddingSettings;
use shared::embed::{Embedder, LocalMiniLm, LocalOptions};
use worker_files::chunk::Chunker;
use worker_files::extract::{DocumentKind, Page, normalize_text};

use crate::corpus::Corpus;
use crate::report::{self, Finding, Table, heading};

const REFERENCE_CHUNKS_PER_SECOND: f64 = 182.0;
const BATCH_SIZE: usize = 32;
/// Longest chunk for the headline run; the chunks then average about 60 tokens.
const SHORT_CHUNK_TOKENS: usize = 72;
const PIPELINE_CHUNK_TOKENS: usize = 200;
const PIPELINE_CHUNKS: usize = 256;

pub async fn run(corpus: &Corpus, chunk_count: usize) -> anyhow::Result<Vec<Finding>> {
    heading("Local embeddings: all-MiniLM-L6-v2 with candle on the CPU, batch 32");
    let model_dir = testkit::model_dir();
    let started = Instant::now();
    let embedder = tokio::task::spawn_blocking({
        let model_dir = model_dir.clone();
        move || {
            LocalMiniLm::load(
                &model_dir,
                LocalOptions {
                    batch_size: BATCH_SIZE,
                },
            )
        }
    })
    .await??;
    let load_seconds = started.elapsed().as_secs_f64();

    let settings = EmbeddingSettings {
        model_dir,
        ..EmbeddingSettings::default()
    };
    let tokenizer = shared::embedders::chunk_tokenizer(&settings).map_err(anyhow::Error::msg)?;
    let short_chunker = Chunker::new(tokenizer.clone(), SHORT_CHUNK_TOKENS, 0)?;
    let pipeline_chunker = Chunker::new(tokenizer, PIPELINE_CHUNK_TOKENS, 0)?;
    let short_texts = corpus_chunks(corpus, &short_chunker, chunk_count)?;
    let long_texts = corpus_chunks(corpus, &pipeline_chunker, PIPELINE_CHUNKS)?;

    // One untimed batch: first-touch allocations and thread pool start.
    embedder
        .embed(&short_texts.0[..BATCH_SIZE.min(short_texts.0.len())])
        .await?;

    let mut table = Table::new(
        &format!(
            "Model load {} s; tokens counted without [CLS]/[SEP]",
            report::seconds(load_seconds)
        ),
        &[
            "chunks",
            "count",
            "mean tokens",
            "seconds",
            "chunks/s",
            "vs reference 182/s",
        ],
    );
    let mut headline = 0.0;
    for (label, (texts, mean_tokens)) in [
        (format!("<= {SHORT_CHUNK_TOKENS} tokens"), &short_texts),
        (
            format!("<= {PIPELINE_CHUNK_TOKENS} tokens (pipeline's)"),
            &long_texts,
        ),
    ] {
        let started = Instant::now();
        let vectors = embedder.embed(texts).await?;
        let elapsed = started.elapsed().as_secs_f64();
        anyhow::ensure!(vectors.len() == texts.len(), "one vector per text");
        let chunks_per_second = texts.len() as f64 / elapsed;
        if headline == 0.0 {
            headline = chunks_per_second;
        }
        table.row(vec![
            label,
            texts.len().to_string(),
            format!("{mean_tokens:.1}"),
            report::seconds(elapsed),
            report::rate(texts.len() as f64, elapsed),
            report::ratio(chunks_per_second / REFERENCE_CHUNKS_PER_SECOND),
        ]);
    }
    table.print();
    println!();
    println!(
        "Reference (DESIGN): sentence-transformers on PyTorch, ~60-token chunks: {REFERENCE_CHUNKS_PER_SECOND} chunks/s on this kind of machine (not rerun: no torch here)."
    );
    Ok(vec![Finding {
        what: format!(
            "Local embeddings, ~{:.0}-token chunks (chunks/s)",
            short_texts.1
        ),
        ours: format!("{headline:.1}"),
        reference: format!("sentence-transformers {REFERENCE_CHUNKS_PER_SECOND} (DESIGN)"),
        comparison: report::ratio(headline / REFERENCE_CHUNKS_PER_SECOND),
        target: ">= 1.00x".into(),
        met: Some(headline >= REFERENCE_CHUNKS_PER_SECOND),
    }])
}

/// `count` chunks cut by `chunker` from the corpus text, taken round-robin across
/// the documents; returns them with their mean token count.
fn corpus_chunks(
    corpus: &Corpus,
    chunker: &Chunker,
    count: usize,
) -> anyhow::Result<(Vec<String>, f64)> {
    let mut per_document = Vec::new();
    for file in corpus.pdfs() {
        let page = Page::new(None, normalize_text(&corpus.text_of(&file.stem)?));
        per_document.push(chunker.chunk(DocumentKind::Text, &[page]).into_iter());
    }
    let mut texts = Vec::new();
    let mut tokens = 0_usize;
    while texts.len() < count {
        let before = texts.len();
        for chunks in &mut per_document {
            if texts.len() == count {
                break;
            }
            if let Some(chunk) = chunks.next() {
                tokens += chunk.token_count;
                texts.push(chunk.text);
            }
        }
        anyhow::ensure!(
            texts.len() > before,
            "the corpus has fewer than {count} chunks"
        );
    }
    let mean = tokens as f64 / texts.len().max(1) as f64;
    Ok((texts, mean))
}
