//! Section 3: the pipeline without the model, as the worker runs it: one confined child per file
//! that detects, extracts (pdfium for PDFs) and chunks (all-MiniLM-L6-v2's tokenizer, 200 tokens,
//! overlap 20, the fleet's defaults), then one binary-COPY transaction per file, with a trivial
//! stand-in for the vectors so the model's cost is excluded. Run once with one file at a time (like
//! the peer) and once with the worker's concurrency. Then the peer, LlamaIndex's IngestionPipeline
//! (pypdf, SentenceSplitter 200/20, a mock embedding, PGVectorStore), on the same files and the same
//! Postgres, when its venv is installed (`BENCH_PEERS=1 bench/peers.sh`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Deserialize;
use shared::config::ChunkingSettings;
use sqlx::PgPool;
use uuid::Uuid;
use worker_files::EXTRACT_CHILD_ARG;
use worker_files::extract::sandbox::{ChildRequest, ChunkingRequest};
use worker_files::extract::{ExtractLimits, PdfEngine, Sandbox};
use worker_files::store::{EmbeddedChunk, copy_chunks, text_sha256};

use crate::Paths;
use crate::corpus::{Corpus, CorpusFile};
use crate::database::{FreshDatabase, drop_database, insert_file_row};
use crate::report::{self, Finding, Table, heading};

/// The stand-in vectors are stored under this model id, which has no HNSW index (the
/// peer's PGVectorStore builds none by default either).
const STAND_IN_MODEL: &str = "bench-stand-in";
const DIMENSIONS: usize = 384;
/// The reference (bench/README.md, Targets), measured on this kind of machine on its own corpus.
const REFERENCE_FILES: f64 = 57.0;
const REFERENCE_SECONDS: f64 = 12.7;
const TARGET_SPEEDUP: f64 = 3.0;

#[derive(Debug, Default, Clone, Copy)]
struct StageSeconds {
    extract: f64,
    chunk: f64,
    embed: f64,
    store: f64,
}

impl StageSeconds {
    fn add(&mut self, other: StageSeconds) {
        self.extract += other.extract;
        self.chunk += other.chunk;
        self.embed += other.embed;
        self.store += other.store;
    }
}

struct FileOutcome {
    pages: u64,
    chunks: u64,
    stages: StageSeconds,
}

struct RunOutcome {
    label: String,
    files: usize,
    pages: u64,
    chunks: u64,
    wall_seconds: f64,
    stages: StageSeconds,
}

struct Pipeline {
    pool: PgPool,
    sandbox: Sandbox,
    pdf_engine: PdfEngine,
    chunking: ChunkingRequest,
    limits: ExtractLimits,
    org_id: Uuid,
}

pub async fn run(
    paths: &Paths,
    corpus: &Corpus,
    concurrency: usize,
    skip_peer: bool,
) -> anyhow::Result<Vec<Finding>> {
    heading(
        "Pipeline without the model: extract (sandboxed) + chunk 200/20 + binary COPY, stand-in vectors",
    );
    let worker = paths.worker_binary();
    if !worker.exists() {
        bail!(
            "{} is missing: cargo build --release --bins",
            worker.display()
        );
    }
    let database = FreshDatabase::create("pipeline", concurrency.max(1) as u32 + 1).await?;
    let chunking = ChunkingSettings::default();
    let worker_defaults = shared::config::FilesWorkerSettings::default();
    let scratch = tempfile::tempdir()?;
    let sandbox = Sandbox::new(
        worker,
        vec![EXTRACT_CHILD_ARG.to_string()],
        scratch.path().to_path_buf(),
    )
    .map_err(anyhow::Error::msg)?;
    let pipeline = Pipeline {
        pool: database.pool.clone(),
        sandbox,
        pdf_engine: PdfEngine::Pdfium {
            library: crate::pdfium_library()?,
        },
        chunking: ChunkingRequest {
            tokenizer: testkit::model_dir().join("tokenizer.json"),
            max_tokens: chunking.max_tokens,
            overlap_tokens: chunking.overlap_tokens,
        },
        limits: ExtractLimits {
            max_pages: worker_defaults.extract_max_pages,
            child_memory_bytes: worker_defaults.extract_memory_mb * 1024 * 1024,
            wall_timeout_secs: worker_defaults.extract_timeout_secs,
            child_cpu_seconds: worker_defaults.extract_timeout_secs,
            ..ExtractLimits::default()
        },
        org_id: Uuid::now_v7(),
    };
    // Warm the page cache and the tokenizer before anything is timed.
    for file in &corpus.files {
        std::fs::read(&file.path)?;
    }

    let mut runs = Vec::new();
    runs.push(pipeline.run_corpus(corpus, 1).await?);
    if concurrency > 1 {
        runs.push(pipeline.run_corpus(corpus, concurrency).await?);
    }
    database.drop_now().await?;

    let peer = if skip_peer {
        None
    } else {
        match run_peer(paths, corpus).await {
            Ok(outcome) => outcome,
            Err(error) => {
                println!("the LlamaIndex peer could not run: {error:#}");
                None
            }
        }
    };

    let mut table = Table::new(
        "Throughput (pages: PDF pages, and for a DOCX the pages of the PDF it was made from)",
        &[
            "run", "files", "pages", "chunks", "seconds", "files/s", "pages/s", "chunks/s",
        ],
    );
    for outcome in &runs {
        table.row(vec![
            outcome.label.clone(),
            outcome.files.to_string(),
            outcome.pages.to_string(),
            outcome.chunks.to_string(),
            report::seconds(outcome.wall_seconds),
            report::rate(outcome.files as f64, outcome.wall_seconds),
            report::rate(outcome.pages as f64, outcome.wall_seconds),
            report::rate(outcome.chunks as f64, outcome.wall_seconds),
        ]);
    }
    if let Some(peer) = &peer {
        let pages: u64 = corpus
            .files
            .iter()
            .map(|file| u64::from(file.source_pages))
            .sum();
        table.row(vec![
            "LlamaIndex IngestionPipeline".into(),
            peer.files.to_string(),
            pages.to_string(),
            peer.nodes.to_string(),
            report::seconds(peer.total_seconds),
            report::rate(peer.files as f64, peer.total_seconds),
            report::rate(pages as f64, peer.total_seconds),
            report::rate(peer.nodes as f64, peer.total_seconds),
        ]);
    }
    table.print();

    let mut stages = Table::new(
        "Time per stage (seconds summed over files; with concurrency the sum exceeds the wall time)",
        &[
            "run",
            "extract (child start incl.)",
            "chunk (in the child)",
            "stand-in embed",
            "store (COPY + commit)",
        ],
    );
    for outcome in &runs {
        stages.row(vec![
            outcome.label.clone(),
            report::seconds(outcome.stages.extract),
            report::seconds(outcome.stages.chunk),
            report::seconds(outcome.stages.embed),
            report::seconds(outcome.stages.store),
        ]);
    }
    if let Some(peer) = &peer {
        stages.row(vec![
            "LlamaIndex (extract = pypdf/docx2txt read)".into(),
            format!("read {}", report::seconds(peer.read_seconds)),
            format!("split+embed {}", report::seconds(peer.transform_seconds)),
            "(mock, in split)".into(),
            report::seconds(peer.store_seconds),
        ]);
    }
    stages.print();

    let sequential = &runs[0];
    let concurrent = runs.last().unwrap_or(sequential);
    let reference_rate = REFERENCE_FILES / REFERENCE_SECONDS;
    let mut findings = Vec::new();
    match &peer {
        Some(peer) => {
            let peer_rate = peer.files as f64 / peer.total_seconds;
            println!();
            println!(
                "Same run, same files, same Postgres: ours one at a time is {} the peer's files/s; with concurrency {} it is {}.",
                report::ratio(sequential.files as f64 / sequential.wall_seconds / peer_rate),
                concurrency,
                report::ratio(concurrent.files as f64 / concurrent.wall_seconds / peer_rate),
            );
            findings.push(Finding {
                what: "Pipeline w/o model, one file at a time (files/s)".into(),
                ours: report::rate(sequential.files as f64, sequential.wall_seconds),
                reference: format!(
                    "LlamaIndex {} (this run)",
                    report::rate(peer.files as f64, peer.total_seconds)
                ),
                comparison: format!(
                    "{} the peer's rate",
                    report::ratio(sequential.files as f64 / sequential.wall_seconds / peer_rate)
                ),
                target: format!(">= {TARGET_SPEEDUP:.0}x"),
                met: Some(
                    sequential.files as f64 / sequential.wall_seconds >= TARGET_SPEEDUP * peer_rate,
                ),
            });
            findings.push(Finding {
                what: format!(
                    "Pipeline w/o model, {} (files/s)",
                    concurrent.label.trim_start_matches("ours, ")
                ),
                ours: report::rate(concurrent.files as f64, concurrent.wall_seconds),
                reference: format!(
                    "LlamaIndex {} (this run)",
                    report::rate(peer.files as f64, peer.total_seconds)
                ),
                comparison: format!(
                    "{} the peer's rate",
                    report::ratio(concurrent.files as f64 / concurrent.wall_seconds / peer_rate)
                ),
                target: format!(">= {TARGET_SPEEDUP:.0}x"),
                met: Some(
                    concurrent.files as f64 / concurrent.wall_seconds >= TARGET_SPEEDUP * peer_rate,
                ),
            });
        }
        None => {
            println!();
            println!(
                "Peer did not run (it needs a working venv at {}); the reference (bench/README.md): LlamaIndex 57 files in 12.7 s = {reference_rate:.2} files/s on another corpus.",
                peer_python(paths).display()
            );
            findings.push(Finding {
                what: "Pipeline w/o model, one file at a time (files/s)".into(),
                ours: report::rate(sequential.files as f64, sequential.wall_seconds),
                reference: format!("LlamaIndex {reference_rate:.2} (reference, other corpus)"),
                comparison: format!(
                    "{} (not same-run)",
                    report::ratio(
                        sequential.files as f64 / sequential.wall_seconds / reference_rate
                    )
                ),
                target: format!(">= {TARGET_SPEEDUP:.0}x"),
                met: None,
            });
        }
    }
    Ok(findings)
}

impl Pipeline {
    async fn run_corpus(&self, corpus: &Corpus, concurrency: usize) -> anyhow::Result<RunOutcome> {
        let mut file_ids = Vec::new();
        for file in &corpus.files {
            let file_id = Uuid::now_v7();
            insert_file_row(
                &self.pool,
                file_id,
                self.org_id,
                &file.name,
                file.content_type(),
                file.bytes as i64,
            )
            .await?;
            file_ids.push(file_id);
        }
        let started = Instant::now();
        let outcomes: Vec<anyhow::Result<FileOutcome>> =
            futures::stream::iter(corpus.files.iter().zip(file_ids))
                .map(|(file, file_id)| self.process(file, file_id))
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
        let wall_seconds = started.elapsed().as_secs_f64();
        let mut outcome = RunOutcome {
            label: if concurrency == 1 {
                "ours, 1 file at a time".to_string()
            } else {
                format!("ours, {concurrency} files at a time")
            },
            files: 0,
            pages: 0,
            chunks: 0,
            wall_seconds,
            stages: StageSeconds::default(),
        };
        for file_outcome in outcomes {
            let file_outcome = file_outcome?;
            outcome.files += 1;
            outcome.pages += file_outcome.pages;
            outcome.chunks += file_outcome.chunks;
            outcome.stages.add(file_outcome.stages);
        }
        Ok(outcome)
    }

    async fn process(&self, file: &CorpusFile, file_id: Uuid) -> anyhow::Result<FileOutcome> {
        let mut stages = StageSeconds::default();
        let request = ChildRequest {
            path: file.path.clone(),
            kind: None,
            content_type: Some(file.content_type().to_string()),
            name: Some(file.name.clone()),
            pdf_engine: self.pdf_engine.clone(),
            limits: self.limits.clone(),
            chunking: Some(self.chunking.clone()),
            include_texts: false,
        };
        let started = Instant::now();
        let extraction = self
            .sandbox
            .run(&request)
            .await
            .with_context(|| format!("extracting {}", file.name))?;
        let child_seconds = started.elapsed().as_secs_f64();
        stages.chunk = extraction.chunk_ms as f64 / 1000.0;
        stages.extract = child_seconds - stages.chunk;
        let chunks = extraction.chunks;
        let hashes: Vec<[u8; 32]> = chunks
            .iter()
            .map(|chunk| text_sha256(&chunk.text))
            .collect();

        let started = Instant::now();
        let vectors: Vec<Vec<f32>> = hashes.iter().map(stand_in_vector).collect();
        stages.embed = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let embedded: Vec<EmbeddedChunk<'_>> = chunks
            .iter()
            .zip(&hashes)
            .zip(&vectors)
            .map(|((chunk, hash), vector)| EmbeddedChunk {
                chunk,
                text_sha256: *hash,
                embedding: vector,
            })
            .collect();
        let mut transaction = self.pool.begin().await?;
        copy_chunks(
            &mut transaction,
            self.org_id,
            file_id,
            STAND_IN_MODEL,
            &embedded,
        )
        .await?;
        sqlx::query("UPDATE files SET status = 'ready', chunk_count = $2, finished_at = now() WHERE id = $1")
            .bind(file_id)
            .bind(chunks.len() as i32)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        stages.store = started.elapsed().as_secs_f64();

        let pages = u64::from(file.source_pages);
        Ok(FileOutcome {
            pages,
            chunks: chunks.len() as u64,
            stages,
        })
    }
}

/// A unit vector picked by the text's hash: costs nothing, stores like a real one.
fn stand_in_vector(hash: &[u8; 32]) -> Vec<f32> {
    let mut vector = vec![0.0_f32; DIMENSIONS];
    let position = (usize::from(hash[0]) << 8 | usize::from(hash[1])) % DIMENSIONS;
    vector[position] = 1.0;
    vector
}

#[derive(Debug, Deserialize)]
struct PeerOutcome {
    files: usize,
    nodes: u64,
    read_seconds: f64,
    transform_seconds: f64,
    store_seconds: f64,
    total_seconds: f64,
}

fn peer_python(_paths: &Paths) -> std::path::PathBuf {
    crate::peer_python("llamaindex")
}

/// Runs bench/llamaindex/pipeline.py in its venv against a fresh database.
async fn run_peer(paths: &Paths, corpus: &Corpus) -> anyhow::Result<Option<PeerOutcome>> {
    let python = peer_python(paths);
    if !python.exists() {
        return Ok(None);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("llamaindex/pipeline.py");
    let (database_name, database_url) = FreshDatabase::create_empty("peer").await?;
    println!();
    println!(
        "running the peer: {} {}",
        python.display(),
        script.display()
    );
    let output = tokio::task::spawn_blocking({
        let corpus_dir = corpus.dir.clone();
        move || {
            Command::new(&python)
                .arg(&script)
                .arg("--corpus")
                .arg(&corpus_dir)
                .arg("--database-url")
                .arg(&database_url)
                .output()
        }
    })
    .await??;
    drop_database(&database_name).await?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last_line = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("");
        bail!(
            "the LlamaIndex peer failed ({}): {last_line}",
            output.status
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last_line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .context("the peer printed no result")?;
    let outcome: PeerOutcome = serde_json::from_str(last_line)?;
    if outcome.files != corpus.files.len() {
        bail!(
            "the peer read {} files, the corpus has {}",
            outcome.files,
            corpus.files.len()
        );
    }
    Ok(Some(outcome))
}
