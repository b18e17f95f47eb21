//! worker-files: turns an uploaded file into searchable chunks.
//!
//! # Layout
//! - [`handler`]: the file job: claim the lease, run the stages, record the outcome.
//! - [`download`]: streams the object from S3 to a spool file, with a size cap.
//! - [`extract`]: type detection and text extraction (PDF, DOCX, HTML, Markdown, text),
//!   run in a child process with memory and time limits.
//! - [`chunk`]: token-aware chunking that keeps pages and byte offsets.
//! - [`store`]: binary COPY of chunks and vectors, in one fenced transaction.
//! - [`failpoint`]: named stopping points for crash tests.
//!
//! The worker loop itself (receive, claim, heartbeat, retry, shutdown) is the shared one
//! in `shared::worker`; this crate supplies the [`handler::FileHandler`], and registers
//! `shared::schedules::ScheduleTickHandler` beside it for the clock ticks on its queue.

/// Token-aware chunking.
pub mod chunk;
/// Streaming, capped S3 download.
pub mod download;
/// Sandboxed text extraction.
pub mod extract;
/// Named failure points for tests.
pub mod failpoint;
/// The file job handler.
pub mod handler;
/// Chunk and vector storage.
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shared::aws::AwsClients;
use shared::config::Settings;
use shared::queue::Queue;
use shared::schedules::ScheduleTickHandler;
use shared::worker::{Handlers, WorkerOptions, run_worker};
use tokio_util::sync::CancellationToken;

use crate::chunk::Chunker;
use crate::extract::ExtractLimits;
use crate::handler::FileHandler;

/// The argument that makes the worker binary act as the sandboxed extractor.
pub const EXTRACT_CHILD_ARG: &str = "extract-child";

/// Runs the worker until `shutdown` fires and in-flight files are done or released.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = shared::db::connect(&settings.database).await?;
    let aws = AwsClients::new(&settings.aws).await;
    let queue =
        Queue::from_settings(&aws.sqs, &settings.queues.file_jobs, &settings.queues).await?;
    let embedder = shared::embedders::from_settings(&settings.embedding)
        .await
        .context("loading the embedding model")?;
    shared::embedders::ensure_index(&pool, embedder.as_ref())
        .await
        .context("creating the model's vector index")?;
    let tokenizer = shared::embedders::chunk_tokenizer(&settings.embedding)
        .map_err(anyhow::Error::msg)
        .context("loading the chunking tokenizer")?;
    let chunker = Chunker::new(
        tokenizer,
        settings.chunking.max_tokens,
        settings.chunking.overlap_tokens,
    )
    .context("invalid chunking settings")?;

    let worker_settings = settings.files_worker.clone();
    let extractor_program = match &worker_settings.extractor_program {
        Some(program) => program.clone(),
        None => std::env::current_exe().context("locating the worker binary for the extractor")?,
    };
    let extract_limits = ExtractLimits {
        max_pages: worker_settings.extract_max_pages,
        child_memory_bytes: worker_settings.extract_memory_mb * 1024 * 1024,
        // CPU time beyond the wall-clock budget cannot help either.
        wall_timeout_secs: worker_settings.extract_timeout_secs,
        child_cpu_seconds: worker_settings.extract_timeout_secs,
        ..ExtractLimits::default()
    };
    let spool_dir = worker_settings
        .spool_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("creating the spool folder {}", spool_dir.display()))?;
    // EventBridge Scheduler sends its clock ticks to file-jobs: this worker fires them.
    let ticks = ScheduleTickHandler {
        pool: pool.clone(),
        context: shared::schedules::ActionContext {
            default_model: embedder.model_id().to_string(),
            extractor_version: shared::EXTRACTOR_VERSION as i32,
        },
        instance: format!(
            "worker-files:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string())
        ),
    };
    let options = WorkerOptions {
        concurrency: worker_settings.concurrency,
        receive_wait: Duration::from_secs(u64::from(worker_settings.receive_wait_secs)),
        lease: worker_settings.lease(),
        shutdown_deadline: Duration::from_secs(worker_settings.shutdown_deadline_secs),
        retry: settings.retry.clone(),
    };
    let handler = FileHandler {
        pool,
        s3: aws.s3.clone(),
        bucket: settings.storage.bucket.clone(),
        embedder,
        chunker: Arc::new(chunker),
        settings: worker_settings,
        extract_limits,
        extractor_program,
        extractor_args: vec![EXTRACT_CHILD_ARG.to_string()],
        spool_dir,
    };
    // Metrics outlive the drain, so the last jobs' outcomes are still scraped.
    let metrics_shutdown = CancellationToken::new();
    let metrics_address =
        shared::metrics::serve(&settings.metrics.listen, metrics_shutdown.clone())
            .await
            .context("binding the metrics listener")?;
    tracing::info!(%metrics_address, queue = %queue.name, model = handler.embedder.model_id(), "worker-files ready");
    let handlers = Handlers::new()
        .with(Arc::new(handler))
        .with(Arc::new(ticks));
    run_worker(queue, handlers, options, shutdown).await;
    metrics_shutdown.cancel();
    Ok(())
}
