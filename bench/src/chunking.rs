//! Section: chunking alone, ours against LlamaIndex's `SentenceSplitter` on the same texts.
//!
//! The texts are pdftotext's texts of the corpus PDFs (the files the DOCX twins were made from),
//! normalized once by our `normalize_text` and written out, so both sides split exactly the same
//! strings. Ours: `Chunker` (all-MiniLM-L6-v2's tokenizer, 200 tokens, overlap 20, each segment
//! tokenized once, counts kept) in this process, one thread. The peer: `SentenceSplitter(chunk_size=200,
//! chunk_overlap=20)` (its default tiktoken tokenizer) in its venv, one thread, timed around
//! `get_nodes_from_documents` only. Best of three rounds each, after a warm-up.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Deserialize;
use shared::config::ChunkingSettings;
use worker_files::chunk::Chunker;
use worker_files::extract::{Page, normalize_text};

use crate::Paths;
use crate::corpus::Corpus;
use crate::report::{self, Finding, Table, heading};

const ROUNDS: usize = 3;
const TARGET_SPEEDUP: f64 = 5.0;

#[derive(Debug, Deserialize)]
struct PeerOutcome {
    documents: usize,
    nodes: usize,
    best_seconds: f64,
}

pub async fn run(paths: &Paths, corpus: &Corpus) -> anyhow::Result<Vec<Finding>> {
    heading("Chunking alone: ours vs LlamaIndex SentenceSplitter (200/20), same texts");
    let texts_dir = paths.out_dir.join("chunk-texts");
    std::fs::create_dir_all(&texts_dir)?;
    let mut texts = Vec::new();
    for file in corpus.pdfs() {
        let text = normalize_text(&corpus.text_of(&file.stem)?);
        std::fs::write(texts_dir.join(format!("{}.txt", file.stem)), &text)?;
        texts.push(text);
    }
    let bytes: usize = texts.iter().map(String::len).sum();

    let chunking = ChunkingSettings::default();
    let chunker = Chunker::from_tokenizer_file(
        &testkit::model_dir().join("tokenizer.json"),
        chunking.max_tokens,
        chunking.overlap_tokens,
    )?;
    let pages: Vec<Vec<Page>> = texts
        .iter()
        .map(|text| vec![Page::new(None, text.clone())])
        .collect();
    let chunk_all = || -> (usize, usize) {
        let mut chunk_count = 0;
        let mut token_count = 0;
        for document in &pages {
            let chunks = chunker.chunk(document);
            chunk_count += chunks.len();
            token_count += chunks.iter().map(|chunk| chunk.token_count).sum::<usize>();
        }
        (chunk_count, token_count)
    };
    chunk_all();
    let mut best = f64::INFINITY;
    let mut counts = (0, 0);
    for _ in 0..ROUNDS {
        let started = Instant::now();
        counts = chunk_all();
        best = best.min(started.elapsed().as_secs_f64());
    }
    let (chunk_count, token_count) = counts;

    let peer = run_peer(paths, &texts_dir);
    let mut table = Table::new(
        &format!(
            "{} texts, {:.1} MiB (best of {ROUNDS})",
            texts.len(),
            bytes as f64 / (1024.0 * 1024.0)
        ),
        &["splitter", "seconds", "MiB/s", "chunks", "vs the peer"],
    );
    table.row(vec![
        "ours (Chunker, BERT WordPiece)".into(),
        report::seconds(best),
        format!("{:.2}", bytes as f64 / (1024.0 * 1024.0) / best),
        chunk_count.to_string(),
        match &peer {
            Ok(outcome) => report::ratio(outcome.best_seconds / best),
            Err(_) => "-".into(),
        },
    ]);
    match &peer {
        Ok(outcome) => {
            table.row(vec![
                "LlamaIndex SentenceSplitter (tiktoken)".into(),
                report::seconds(outcome.best_seconds),
                format!(
                    "{:.2}",
                    bytes as f64 / (1024.0 * 1024.0) / outcome.best_seconds
                ),
                outcome.nodes.to_string(),
                "1.00x".into(),
            ]);
            if outcome.documents != texts.len() {
                bail!(
                    "the peer split {} texts, not {}",
                    outcome.documents,
                    texts.len()
                );
            }
        }
        Err(error) => println!("the peer did not run: {error:#}"),
    }
    table.print();
    println!(
        "ours: {token_count} tokens in {chunk_count} chunks, mean {:.1} tokens",
        token_count as f64 / chunk_count.max(1) as f64
    );

    Ok(vec![Finding {
        what: "Chunking alone, 200/20 (MiB/s)".into(),
        ours: format!("{:.2}", bytes as f64 / (1024.0 * 1024.0) / best),
        reference: match &peer {
            Ok(outcome) => format!(
                "SentenceSplitter {:.2} (this run)",
                bytes as f64 / (1024.0 * 1024.0) / outcome.best_seconds
            ),
            Err(_) => "SentenceSplitter: not installed".into(),
        },
        comparison: match &peer {
            Ok(outcome) => format!("{} its speed", report::ratio(outcome.best_seconds / best)),
            Err(_) => "-".into(),
        },
        target: format!(">= {TARGET_SPEEDUP:.0}x"),
        met: peer
            .as_ref()
            .ok()
            .map(|outcome| outcome.best_seconds / best >= TARGET_SPEEDUP),
    }])
}

fn run_peer(_paths: &Paths, texts_dir: &Path) -> anyhow::Result<PeerOutcome> {
    let python = crate::peer_python("llamaindex");
    if !python.exists() {
        bail!(
            "{} is missing (BENCH_PEERS=1 bench/peers.sh)",
            python.display()
        );
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("llamaindex/split.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg("--texts")
        .arg(texts_dir)
        .arg("--rounds")
        .arg(ROUNDS.to_string())
        .output()
        .context("running the SentenceSplitter peer")?;
    if !output.status.success() {
        bail!(
            "the peer failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last_line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .context("the peer printed no result")?;
    Ok(serde_json::from_str(last_line)?)
}
