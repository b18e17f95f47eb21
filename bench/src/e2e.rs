//! Section 5: end to end with real processes. api-lite runs in this process
//! (`testkit::TestApp`: fresh database, queue with DLQ, bucket on the local stack), and a
//! release `worker-files` process consumes the jobs with its default concurrency and the
//! local model. Every corpus file is uploaded through the API (presigned PUT, confirm);
//! the figures cover the first upload to the last file seen ready.
//!
//! The peer, in the same run on the same files: LlamaIndex's IngestionPipeline with
//! HuggingFaceEmbedding on the same all-MiniLM-L6-v2 folder (`llamaindex/e2e.py`, in the
//! venv of `bench/peers-model.sh`), storing into PGVectorStore on the same Postgres.
//!
//! Memory: the worker's idle RSS once its start-up settles (with the local model loaded,
//! and once more for a worker configured with a remote embedder, so without the model),
//! its peak (VmHWM), this process's peak (api-lite and the harness), and the peaks of the
//! sandboxed extraction children sampled every 20 ms.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use serde::Deserialize;
use testkit::{TestApp, TestOptions, WorkerProcess};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Paths;
use crate::corpus::{Corpus, CorpusFile};
use crate::database::{self, FreshDatabase, drop_database};
use crate::report::{self, Finding, Table, heading};
use crate::rss::{self, PeakTracker};

const STAGES: [&str; 5] = ["download", "extract", "chunk", "embed", "store"];
const UPLOADS_IN_FLIGHT: usize = 4;
const WAIT_PER_FILE: Duration = Duration::from_secs(600);
/// The targets for the worker's memory (bench/README.md, Targets).
const IDLE_WITHOUT_MODEL_TARGET_MIB: f64 = 30.0;
const WITH_MODEL_TARGET_MIB: f64 = 250.0;

pub async fn run(paths: &Paths, corpus: &Corpus, limit: usize) -> anyhow::Result<Vec<Finding>> {
    heading("End to end: api-lite (in this process) + a release worker-files process, local model");
    let worker_binary = paths.worker_binary();
    if !worker_binary.exists() {
        bail!(
            "{} is missing: cargo build --release --bins",
            worker_binary.display()
        );
    }
    let worker_binary = worker_binary.to_string_lossy().into_owned();
    let files: Vec<&CorpusFile> = corpus.files.iter().take(limit).collect();
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 3,
        // Generous: a file waits in line behind others while the model works.
        visibility_timeout_secs: 300,
        configure: Some(database::unthrottled()),
        ..TestOptions::default()
    })
    .await?;
    let overrides = [
        ("GLASSBOX_FILES_WORKER__LEASE_SECS", "60"),
        ("GLASSBOX_FILES_WORKER__EXTRACT_TIMEOUT_SECS", "120"),
        ("GLASSBOX_FILES_WORKER__MAX_FILE_BYTES", "67108864"),
    ];

    // A worker with a remote embedder loads no model: its idle RSS is the fleet's floor.
    let mut remote_overrides = overrides.to_vec();
    remote_overrides.extend([
        ("GLASSBOX_EMBEDDING__PROVIDER", "openai"),
        ("GLASSBOX_EMBEDDING__API_KEY", "unused-no-request-is-made"),
        ("GLASSBOX_EMBEDDING__BASE_URL", "http://127.0.0.1:9/v1"),
        ("GLASSBOX_EMBEDDING__DIMENSIONS", "384"),
    ]);
    let mut remote_worker = app.spawn_worker(&worker_binary, &remote_overrides)?;
    let idle_without_model = settled_rss(&mut remote_worker).await;
    remote_worker.terminate(Duration::from_secs(20)).await.ok();

    let mut worker = app.spawn_worker(&worker_binary, &overrides)?;
    let idle_with_model = settled_rss(&mut worker).await;
    let worker_pid = worker.pid();

    let sampling = CancellationToken::new();
    let children = Arc::new(Mutex::new(PeakTracker::default()));
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        let children = Arc::clone(&children);
        async move {
            while !sampling.is_cancelled() {
                if let Ok(mut tracker) = children.lock() {
                    tracker.sample_children(worker_pid);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let started = Instant::now();
    let uploads: Vec<anyhow::Result<Uuid>> = futures::stream::iter(files.iter())
        .map(|file| upload(&app, file))
        .buffered(UPLOADS_IN_FLIGHT)
        .collect()
        .await;
    let upload_seconds = started.elapsed().as_secs_f64();
    let mut file_ids = Vec::new();
    for upload in uploads {
        file_ids.push(upload?);
    }
    let mut finished = Vec::new();
    for file_id in &file_ids {
        finished.push(
            app.wait_for_file(
                *file_id,
                &["ready", "failed", "dead_lettered"],
                WAIT_PER_FILE,
            )
            .await?,
        );
    }
    let wall_seconds = started.elapsed().as_secs_f64();
    sampling.cancel();
    sampler.await.ok();
    let worker_memory = rss::memory_of(worker_pid).unwrap_or_default();
    let own_memory = rss::own_memory().unwrap_or_default();
    let (processing_seconds,): (f64,) = sqlx::query_as(
        "SELECT COALESCE(EXTRACT(EPOCH FROM max(finished_at) - min(started_at)), 0)::float8 FROM files",
    )
    .fetch_one(&app.pool)
    .await?;
    worker.terminate(Duration::from_secs(30)).await.ok();

    let failed: Vec<String> = finished
        .iter()
        .zip(&files)
        .filter(|(file, _)| file["status"] != "ready")
        .map(|(file, corpus_file)| {
            format!(
                "{}: {} {} {}",
                corpus_file.name, file["status"], file["error_code"], file["error_message"]
            )
        })
        .collect();
    let ready = finished.len() - failed.len();
    let pages: u64 = files.iter().map(|file| u64::from(file.source_pages)).sum();
    let chunks: u64 = finished
        .iter()
        .map(|file| file["chunk_count"].as_u64().unwrap_or(0))
        .sum();

    let mut throughput = Table::new(
        &format!(
            "{} files ({ready} ready), uploads {} at a time took {} s; worker concurrency: its default",
            files.len(),
            UPLOADS_IN_FLIGHT,
            report::seconds(upload_seconds)
        ),
        &["window", "seconds", "files/s", "pages/s", "chunks/s"],
    );
    for (label, seconds) in [
        ("first upload -> last ready", wall_seconds),
        ("first claim -> last finish (database)", processing_seconds),
    ] {
        throughput.row(vec![
            label.to_string(),
            report::seconds(seconds),
            report::rate(ready as f64, seconds),
            report::rate(pages as f64, seconds),
            report::rate(chunks as f64, seconds),
        ]);
    }
    throughput.print();
    println!(
        "pages: {pages} (PDF pages; a DOCX counts the pages of the PDF it was made from); chunks: {chunks}"
    );

    let mut stages = Table::new(
        "Per stage, from each file's stage_durations_ms (files overlap, so sums exceed the wall time)",
        &["stage", "sum s", "mean ms/file", "share"],
    );
    let stage_sums: Vec<f64> = STAGES
        .iter()
        .map(|stage| {
            finished
                .iter()
                .map(|file| file["stage_durations_ms"][*stage].as_f64().unwrap_or(0.0))
                .sum::<f64>()
                / 1000.0
        })
        .collect();
    let all_stages: f64 = stage_sums.iter().sum();
    for (stage, sum) in STAGES.iter().zip(&stage_sums) {
        stages.row(vec![
            stage.to_string(),
            report::seconds(*sum),
            format!("{:.0}", sum * 1000.0 / finished.len().max(1) as f64),
            format!("{:.1}%", 100.0 * sum / all_stages.max(f64::EPSILON)),
        ]);
    }
    stages.print();

    let children = children.lock().map(|tracker| {
        (
            tracker.sampled_processes(),
            tracker.highest_kib(),
            tracker.median_kib(),
        )
    });
    let (child_count, child_highest, child_median) = children.unwrap_or((0, 0, 0));
    let mut memory = Table::new("Memory (MiB)", &["process", "RSS", "what"]);
    memory.row(vec![
        "worker-files, idle after start, remote embedder".into(),
        idle_without_model
            .map(report::mib)
            .unwrap_or_else(|| "-".into()),
        format!("target <= {IDLE_WITHOUT_MODEL_TARGET_MIB:.0}"),
    ]);
    memory.row(vec![
        "worker-files, idle after start, local model".into(),
        idle_with_model
            .map(report::mib)
            .unwrap_or_else(|| "-".into()),
        "model loaded, no job yet".into(),
    ]);
    memory.row(vec![
        "worker-files, peak (VmHWM)".into(),
        report::mib(worker_memory.peak_kib),
        format!("target <= {WITH_MODEL_TARGET_MIB:.0} with the model"),
    ]);
    memory.row(vec![
        "extraction children, highest peak seen".into(),
        report::mib(child_highest),
        format!(
            "{child_count} children sampled every 20 ms, median peak {} MiB",
            report::mib(child_median)
        ),
    ]);
    memory.row(vec![
        "this process, peak (VmHWM)".into(),
        report::mib(own_memory.peak_kib),
        "api-lite + the harness (HTTP client, pools)".into(),
    ]);
    memory.print();
    for failure in &failed {
        println!("NOT READY: {failure}");
    }

    // Its database goes with it (testkit's `TestApp` drops it).
    drop(app);

    let ours = Throughput {
        files: ready,
        chunks,
        seconds: wall_seconds,
    };
    let peer_finding = compare_with_peer(&files, &ours).await;

    let peak_mib = worker_memory.peak_kib as f64 / 1024.0;
    let mut findings = vec![Finding {
        what: "End to end with the model (files/s, pages/s)".into(),
        ours: format!(
            "{} files/s, {} pages/s",
            report::rate(ready as f64, wall_seconds),
            report::rate(pages as f64, wall_seconds)
        ),
        reference: "-".into(),
        comparison: format!("{chunks} chunks in {} s", report::seconds(wall_seconds)),
        target: "all files ready".into(),
        met: Some(failed.is_empty()),
    }];
    findings.extend(peer_finding);
    if let Some(idle) = idle_without_model {
        let idle_mib = idle as f64 / 1024.0;
        findings.push(Finding {
            what: "Worker RSS idle, without the local model (MiB)".into(),
            ours: format!("{idle_mib:.1}"),
            reference: "Python peers 1-1.9 GB".into(),
            comparison: "-".into(),
            target: format!("<= {IDLE_WITHOUT_MODEL_TARGET_MIB:.0}"),
            met: Some(idle_mib <= IDLE_WITHOUT_MODEL_TARGET_MIB),
        });
    }
    findings.push(Finding {
        what: "Worker RSS peak, with the local model (MiB)".into(),
        ours: format!("{peak_mib:.1}"),
        reference: "Python peers 1-1.9 GB".into(),
        comparison: format!(
            "idle {} MiB; children up to {} MiB",
            idle_with_model
                .map(report::mib)
                .unwrap_or_else(|| "-".into()),
            report::mib(child_highest)
        ),
        target: format!("<= {WITH_MODEL_TARGET_MIB:.0}"),
        met: Some(peak_mib <= WITH_MODEL_TARGET_MIB),
    });
    Ok(findings)
}

async fn upload(app: &TestApp, file: &CorpusFile) -> anyhow::Result<Uuid> {
    let bytes = tokio::fs::read(&file.path).await?;
    app.upload(&file.name, file.content_type(), bytes)
        .await
        .with_context(|| format!("uploading {}", file.name))
}

/// The worker's RSS once it has stopped growing for a second (start-up done), in KiB;
/// `None` when the process exited.
async fn settled_rss(worker: &mut WorkerProcess) -> Option<u64> {
    let started = Instant::now();
    let mut last = 0_u64;
    let mut stable_since = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if !worker.is_running() {
            return None;
        }
        let current = rss::memory_of(worker.pid())?.rss_kib;
        if current.abs_diff(last) > last / 100 {
            last = current;
            stable_since = Instant::now();
        } else if stable_since.elapsed() >= Duration::from_secs(1)
            && started.elapsed() >= Duration::from_secs(2)
        {
            return Some(current);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(last)
}

/// What one side of the end-to-end comparison did.
struct Throughput {
    files: usize,
    chunks: u64,
    seconds: f64,
}

/// The LlamaIndex peer's report (`llamaindex/e2e.py`).
#[derive(Debug, Deserialize)]
struct PeerOutcome {
    files: usize,
    nodes: u64,
    threads: usize,
    read_seconds: f64,
    split_seconds: f64,
    embed_seconds: f64,
    store_seconds: f64,
    total_seconds: f64,
}

/// Runs LlamaIndex + HuggingFaceEmbedding (same weights, same files, same thread count,
/// fresh database on the same Postgres) and prints both sides; the finding compares
/// files/s against the 1.5x target. `None` when the peer is not installed or fails.
async fn compare_with_peer(files: &[&CorpusFile], ours: &Throughput) -> Option<Finding> {
    let Some(python) = crate::embed::model_peer_python() else {
        println!(
            "the LlamaIndex + HuggingFaceEmbedding peer is not installed (BENCH_PEERS=1 bench/run.sh e2e installs it)"
        );
        return None;
    };
    match run_peer(&python, files).await {
        Ok(peer) => {
            let mut table = Table::new(
                &format!(
                    "Same files, same weights, same Postgres; the peer runs {} torch threads, batch 32 (model load excluded on both sides)",
                    peer.threads
                ),
                &[
                    "run",
                    "files",
                    "chunks",
                    "seconds",
                    "files/s",
                    "chunks/s",
                    "stages (s)",
                ],
            );
            table.row(vec![
                "ours: upload -> ready through api-lite and worker-files".into(),
                ours.files.to_string(),
                ours.chunks.to_string(),
                report::seconds(ours.seconds),
                report::rate(ours.files as f64, ours.seconds),
                report::rate(ours.chunks as f64, ours.seconds),
                "see the stage table above".into(),
            ]);
            table.row(vec![
                "LlamaIndex IngestionPipeline + HuggingFaceEmbedding".into(),
                peer.files.to_string(),
                peer.nodes.to_string(),
                report::seconds(peer.total_seconds),
                report::rate(peer.files as f64, peer.total_seconds),
                report::rate(peer.nodes as f64, peer.total_seconds),
                format!(
                    "read {} split {} embed {} store {}",
                    report::seconds(peer.read_seconds),
                    report::seconds(peer.split_seconds),
                    report::seconds(peer.embed_seconds),
                    report::seconds(peer.store_seconds)
                ),
            ]);
            table.print();
            let ours_rate = ours.files as f64 / ours.seconds;
            let peer_rate = peer.files as f64 / peer.total_seconds;
            println!(
                "ours is {} the peer's files/s (target >= 1.50x)",
                report::ratio(ours_rate / peer_rate)
            );
            Some(Finding {
                what: "End to end with the local model vs LlamaIndex (files/s)".into(),
                ours: report::rate(ours.files as f64, ours.seconds),
                reference: format!(
                    "LlamaIndex + HuggingFaceEmbedding {} (this run)",
                    report::rate(peer.files as f64, peer.total_seconds)
                ),
                comparison: report::ratio(ours_rate / peer_rate),
                target: ">= 1.50x".into(),
                met: Some(ours_rate >= 1.5 * peer_rate),
            })
        }
        Err(error) => {
            println!("the LlamaIndex + HuggingFaceEmbedding peer could not run: {error:#}");
            None
        }
    }
}

async fn run_peer(python: &std::path::Path, files: &[&CorpusFile]) -> anyhow::Result<PeerOutcome> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("llamaindex/e2e.py");
    let (database_name, database_url) = FreshDatabase::create_empty("e2e_peer").await?;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    println!();
    println!(
        "running the peer: {} {}",
        python.display(),
        script.display()
    );
    let mut command = std::process::Command::new(python);
    command
        .arg(&script)
        .arg("--model-dir")
        .arg(testkit::model_dir())
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--database-url")
        .arg(&database_url)
        .args(files.iter().map(|file| &file.path))
        // Everything is local: never ask a hub for the model.
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1");
    let output = tokio::task::spawn_blocking(move || command.output()).await??;
    drop_database(&database_name).await.ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(last_line) = stdout.lines().rev().find(|line| line.starts_with('{')) else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let cause = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("");
        bail!("the peer printed no result ({}): {cause}", output.status);
    };
    let outcome: PeerOutcome = serde_json::from_str(last_line)?;
    if outcome.files != files.len() {
        bail!("the peer read {} files, not {}", outcome.files, files.len());
    }
    Ok(outcome)
}
