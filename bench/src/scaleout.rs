//! Section `scaleout`: files ingested per second by 1, 2 and 4 `worker-files` processes
//! on this machine, with a zero-cost embedding endpoint (testkit's `ScriptedEmbeddings`:
//! deterministic vectors, no model), and which resource binds.
//!
//! Each phase uploads its files through api-lite (in this process) with no worker up,
//! waits until the outbox has relayed every job, then starts N release workers (their
//! default concurrency each) and waits until every file is ready. It reports files/s and
//! chunks/s over that window, and the cores in use meanwhile by the workers (their
//! extraction children included, as those are their children in `/proc` only while they
//! live: the worker's own figure is a floor), this database's Postgres backends, the moto
//! server (the SQS and S3 endpoint) and this process (api-lite and the embedding
//! endpoint), from `/proc` (`testkit::cpu`). See docs/scaling.md.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use testkit::scripted::{EmbeddingReply, ScriptedEmbeddings};
use testkit::{TestApp, TestOptions, WorkerProcess};
use uuid::Uuid;

use crate::Paths;
use crate::report::{Finding, heading};

const UPLOADS_IN_FLIGHT: usize = 8;
/// Paragraphs per generated file: about 6 KB of text, 3-4 chunks.
const PARAGRAPHS_PER_FILE: usize = 12;

/// One phase's figures.
struct Phase {
    workers: usize,
    files: usize,
    chunks: i64,
    secs: f64,
    usage: testkit::cpu::Usage,
}

/// A Markdown file of its own words, so chunks differ between files.
fn generated_file(index: usize) -> Vec<u8> {
    let mut text = format!("# Report {index}\n\n");
    for paragraph in 0..PARAGRAPHS_PER_FILE {
        text.push_str(&format!(
            "Section {paragraph} of report {index} describes shipment {} arriving at depot {} \
             with {} pallets, inspected on day {} by team {}; the notes record temperature, \
             humidity and the condition of every crate, and the follow-up owner for each. ",
            index * 31 + paragraph,
            paragraph % 7,
            (index + paragraph) % 40,
            paragraph + 1,
            index % 9
        ));
        text.push_str("\n\n");
    }
    text.into_bytes()
}

async fn cpu_snapshot(app: &TestApp, workers: &[u32]) -> anyhow::Result<testkit::cpu::Snapshot> {
    let mut processes: Vec<(String, u32)> = workers
        .iter()
        .map(|pid| ("workers".to_string(), *pid))
        .collect();
    for pid in testkit::cpu::database_backends(&app.pool).await? {
        processes.push(("postgres".into(), pid));
    }
    let endpoint = testkit::aws_endpoint();
    let port = endpoint
        .rsplit(':')
        .next()
        .and_then(|port| port.trim_end_matches('/').parse::<u16>().ok());
    if let Some(pid) = port.and_then(testkit::cpu::moto_pid) {
        processes.push(("moto (SQS, S3)".into(), pid));
    }
    processes.push(("bench (api-lite, embeddings)".into(), std::process::id()));
    Ok(testkit::cpu::Snapshot::take(&processes))
}

async fn run_phase(
    app: &TestApp,
    worker_binary: &str,
    embeddings_url: &str,
    workers: usize,
    files: usize,
) -> anyhow::Result<Phase> {
    let uploads: Vec<anyhow::Result<Uuid>> = futures::stream::iter(0..files)
        .map(|index| async move {
            app.upload(
                &format!("report-{workers}-{index}.md"),
                "text/markdown",
                generated_file(index),
            )
            .await
        })
        .buffer_unordered(UPLOADS_IN_FLIGHT)
        .collect()
        .await;
    let ids: Vec<Uuid> = uploads.into_iter().collect::<anyhow::Result<_>>()?;
    app.wait_for_relay(Duration::from_secs(60)).await?;
    let overrides = [
        ("GLASSBOX_EMBEDDING__PROVIDER", "openai"),
        ("GLASSBOX_EMBEDDING__BASE_URL", embeddings_url),
        ("GLASSBOX_EMBEDDING__MODEL", "scripted"),
        ("GLASSBOX_EMBEDDING__DIMENSIONS", "384"),
        ("GLASSBOX_EMBEDDING__API_KEY", "unused"),
        ("GLASSBOX_FILES_WORKER__RECEIVE_WAIT_SECS", "1"),
        ("RUST_LOG", "warn"),
    ];
    let before = cpu_snapshot(app, &[]).await?;
    let started = Instant::now();
    let mut processes: Vec<WorkerProcess> = Vec::new();
    for _ in 0..workers {
        processes.push(app.spawn_worker(worker_binary, &overrides)?);
    }
    let deadline = started + Duration::from_secs(600);
    loop {
        let (ready, failed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'ready'), count(*) FILTER (WHERE status IN ('failed', 'dead_lettered')) \
             FROM files WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&app.pool)
        .await?;
        if failed > 0 {
            bail!("{failed} files failed");
        }
        if ready as usize == ids.len() {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {} files ready after 600 s", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let pids: Vec<u32> = processes.iter().map(WorkerProcess::pid).collect();
    let after = cpu_snapshot(app, &pids).await?;
    for mut worker in processes {
        worker.kill().await?;
    }
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE file_id = ANY($1)")
        .bind(&ids)
        .fetch_one(&app.pool)
        .await?;
    Ok(Phase {
        workers,
        files: ids.len(),
        chunks,
        secs,
        usage: testkit::cpu::Usage::between(&before, &after),
    })
}

pub async fn run(paths: &Paths, files: usize, workers: &[usize]) -> anyhow::Result<Vec<Finding>> {
    heading("Scale-out: worker-files processes against files/s, zero-cost embedding endpoint");
    let worker_binary = paths.worker_binary();
    if !worker_binary.exists() {
        bail!(
            "{} is missing: cargo build --release --bins",
            worker_binary.display()
        );
    }
    let worker_binary = worker_binary.to_string_lossy().into_owned();
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 5,
        visibility_timeout_secs: 120,
        // The bench uploads as fast as it can: no per-org rate limit.
        configure: Some(std::sync::Arc::new(
            |settings: &mut shared::config::Settings| {
                settings.api.rate_limit_per_sec = 1e9;
                settings.api.rate_limit_burst = u32::MAX;
            },
        )),
        ..TestOptions::default()
    })
    .await
    .context("starting api-lite on the local stack")?;
    let embeddings = ScriptedEmbeddings::start(vec![EmbeddingReply::Vectors]).await?;
    let embeddings_url = embeddings.base_url();
    let mut phases = Vec::new();
    for &count in workers {
        let phase = run_phase(&app, &worker_binary, &embeddings_url, count, files)
            .await
            .with_context(|| format!("{count} worker(s)"))?;
        println!(
            "  {count} worker(s): {} files, {} chunks in {:.2}s",
            phase.files, phase.chunks, phase.secs
        );
        phases.push(phase);
        // A long poll a killed worker left open can hide the next phase's first messages.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!();
    println!(
        "| workers | files | chunks | s | files/s | chunks/s | vs 1 worker | workers cores | postgres cores | moto cores | bench cores | machine busy | binding |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let base = phases
        .first()
        .map_or(1.0, |phase| phase.files as f64 / phase.secs);
    for phase in &phases {
        let rate = phase.files as f64 / phase.secs;
        let usage = &phase.usage;
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.0} | {:.2}× | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} of {} | {} |",
            phase.workers,
            phase.files,
            phase.chunks,
            phase.secs,
            rate,
            phase.chunks as f64 / phase.secs,
            rate / base,
            usage.cores("workers"),
            usage.cores("postgres"),
            usage.cores("moto (SQS, S3)"),
            usage.cores("bench (api-lite, embeddings)"),
            usage.machine_busy_cores,
            usage.machine_cores,
            usage.binding(&["moto (SQS, S3)"]),
        );
    }
    Ok(Vec::new())
}
