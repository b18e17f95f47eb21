//! worker-files: turns an uploaded file into searchable chunks.
//!
//! # Layout
//! - [`handler`]: the file job: claim the lease, run the stages, record the outcome.
//! - [`download`]: streams the object from S3 to a spool file, with a size cap.
//! - [`extract`]: type detection and text extraction (PDF through pdfium or pdf-extract, DOCX, HTML,
//!   Markdown, text), run with the chunking in a confined child process.
//! - [`chunk`]: token-aware chunking in linear time that keeps pages, parts and byte offsets.
//! - [`store`]: binary COPY of chunks and vectors, in one fenced transaction.
//! - [`scratch`]: the worker's private spool folder; folders of killed workers are removed at start.
//! - [`command`]: `worker-files extract FILE`, the same sandboxed path for people.
//! - [`failpoint`]: named stopping points for crash tests.
//!
//! The worker loop itself (receive, claim, heartbeat, retry, shutdown) is the shared one
//! in `shared::worker`; this crate supplies the [`handler::FileHandler`], and registers
//! `shared::schedules::ScheduleTickHandler` beside it for the clock ticks on its queue.

/// Token-aware chunking (runs in the extraction child).
pub mod chunk;
/// `worker-files extract FILE`: the sandboxed path, for people.
pub mod command;
/// Streaming, capped S3 download.
pub mod download;
/// Sandboxed text extraction.
pub mod extract;
/// Named failure points for tests.
pub mod failpoint;
/// The file job handler.
pub mod handler;
/// The worker's private spool folder.
pub mod scratch;
/// Chunk and vector storage.
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use shared::aws::AwsClients;
use shared::config::{
    ChunkingSettings, EmbeddingProvider, EmbeddingSettings, FilesWorkerSettings, PdfEngineChoice,
    Settings,
};
use shared::queue::Queue;
use shared::schedules::ScheduleTickHandler;
use shared::worker::{Handlers, WorkerOptions, run_worker};
use tokio_util::sync::CancellationToken;

use crate::extract::sandbox::{ChunkingRequest, NetworkConfinement};
use crate::extract::{ExtractLimits, PdfEngine, Sandbox};
use crate::handler::FileHandler;
use crate::scratch::WorkerFolder;

/// The argument that makes the worker binary act as the sandboxed extractor.
pub const EXTRACT_CHILD_ARG: &str = "extract-child";

/// Where libpdfium is looked for when `GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY` is unset (after the
/// folder of the worker binary).
pub const PDFIUM_SEARCH_PATH: [&str; 4] = [
    "/opt/glassbox/lib",
    "/usr/local/lib",
    "/usr/lib",
    "/opt/pdfium/lib",
];

/// What every extraction of this worker shares: the sandbox, the PDF engine, the limits, the chunking,
/// and the slots that bound how many children run at once.
#[derive(Debug, Clone)]
pub struct ExtractionSetup {
    pub sandbox: Sandbox,
    pub pdf_engine: PdfEngine,
    pub limits: ExtractLimits,
    pub chunking: ChunkingRequest,
    /// One permit per child allowed to run at once (`extract_concurrency`).
    pub slots: Arc<tokio::sync::Semaphore>,
    /// The number of those permits.
    pub max_children: usize,
}

impl ExtractionSetup {
    /// Finds the network confinement the kernel allows and the PDF engine the settings ask for, checking
    /// both by starting confined children. Fails when `pdf_engine = pdfium` and libpdfium does not load.
    pub fn prepare(
        settings: &FilesWorkerSettings,
        embedding: &EmbeddingSettings,
        chunking: &ChunkingSettings,
        scratch_root: &Path,
    ) -> anyhow::Result<ExtractionSetup> {
        let program = match &settings.extractor_program {
            Some(program) => program.clone(),
            None => {
                std::env::current_exe().context("locating the worker binary for the extractor")?
            }
        };
        let sandbox = Sandbox::new(
            program.clone(),
            vec![EXTRACT_CHILD_ARG.to_string()],
            scratch_root.to_path_buf(),
        )
        .map_err(anyhow::Error::msg)
        .context("confining the extraction child")?;
        let pdf_engine = resolve_pdf_engine(settings, &program)?;
        let slots = extraction_slots(settings.extract_concurrency, embedding.provider);
        Ok(ExtractionSetup {
            sandbox,
            pdf_engine,
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            max_children: slots,
            limits: ExtractLimits {
                max_pages: settings.extract_max_pages,
                child_memory_bytes: settings.extract_memory_mb * 1024 * 1024,
                wall_timeout_secs: settings.extract_timeout_secs,
                // CPU time beyond the wall-clock budget cannot help either.
                child_cpu_seconds: settings.extract_timeout_secs,
                ..ExtractLimits::default()
            },
            chunking: ChunkingRequest {
                tokenizer: embedding.model_dir.join("tokenizer.json"),
                max_tokens: chunking.max_tokens,
                overlap_tokens: chunking.overlap_tokens,
            },
        })
    }

    pub fn network(&self) -> NetworkConfinement {
        self.sandbox.network
    }
}

/// Children allowed at once: `configured`, or when it is 0, one with the local model (its engine
/// already keeps every core busy, and each child is 25-60 MiB more) and one per usable core otherwise.
fn extraction_slots(configured: usize, embedder: EmbeddingProvider) -> usize {
    if configured > 0 {
        return configured;
    }
    match embedder {
        EmbeddingProvider::Local => 1,
        EmbeddingProvider::Openai => std::thread::available_parallelism().map_or(1, usize::from),
    }
}

/// The PDF engine the settings ask for, with the library found and checked in a child.
pub fn resolve_pdf_engine(
    settings: &FilesWorkerSettings,
    program: &Path,
) -> anyhow::Result<PdfEngine> {
    if settings.pdf_engine == PdfEngineChoice::PdfExtract {
        return Ok(PdfEngine::PdfExtract);
    }
    let found = find_pdfium(settings.pdfium_library.as_deref(), program);
    let checked = found.and_then(|library| {
        check_pdfium_loads(program, &library)?;
        Ok(library)
    });
    match (checked, settings.pdf_engine) {
        (Ok(library), _) => Ok(PdfEngine::Pdfium { library }),
        (Err(error), PdfEngineChoice::Pdfium) => {
            Err(error
                .context("GLASSBOX_FILES_WORKER__PDF_ENGINE=pdfium, but libpdfium is not usable"))
        }
        (Err(error), _) => {
            tracing::warn!(error = %format!("{error:#}"), "libpdfium is not usable: PDFs are read with pdf-extract");
            Ok(PdfEngine::PdfExtract)
        }
    }
}

/// The configured library, or the first `libpdfium.so` next to the binary or on [`PDFIUM_SEARCH_PATH`].
fn find_pdfium(configured: Option<&Path>, program: &Path) -> anyhow::Result<PathBuf> {
    const LIBRARY: &str = "libpdfium.so";
    if let Some(path) = configured {
        let library = if path.is_dir() {
            path.join(LIBRARY)
        } else {
            path.to_path_buf()
        };
        if !library.is_file() {
            bail!(
                "GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY={}: no such file",
                library.display()
            );
        }
        return Ok(library);
    }
    let mut candidates: Vec<PathBuf> = program
        .parent()
        .map(|folder| folder.join(LIBRARY))
        .into_iter()
        .collect();
    candidates.extend(
        PDFIUM_SEARCH_PATH
            .iter()
            .map(|folder| Path::new(folder).join(LIBRARY)),
    );
    candidates
        .iter()
        .find(|candidate| candidate.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no {LIBRARY} in {}",
                candidates
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Loads the library in a child (never in the worker: it is C++ that only the sandbox runs).
fn check_pdfium_loads(program: &Path, library: &Path) -> anyhow::Result<()> {
    let output = std::process::Command::new(program)
        .arg(EXTRACT_CHILD_ARG)
        .arg(extract::sandbox::PDFIUM_CHECK_ARG)
        .arg(library)
        .env_clear()
        .output()
        .context("starting the pdfium check")?;
    if !output.status.success() {
        bail!(
            "{} does not load: {}",
            library.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Runs the worker until `shutdown` fires and in-flight files are done or released.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let worker_settings = settings.files_worker.clone();
    let spool_parent = worker_settings
        .spool_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let (worker_folder, stale_folders) = WorkerFolder::create(&spool_parent)
        .with_context(|| format!("creating the spool folder under {}", spool_parent.display()))?;
    let extraction = Arc::new(ExtractionSetup::prepare(
        &worker_settings,
        &settings.embedding,
        &settings.chunking,
        worker_folder.path(),
    )?);
    // The worker itself keeps a tokenizer only to fail fast on a broken model folder.
    crate::chunk::Chunker::from_tokenizer_file(
        &extraction.chunking.tokenizer,
        extraction.chunking.max_tokens,
        extraction.chunking.overlap_tokens,
    )
    .context("invalid chunking settings")?;

    let pool = shared::db::connect(&settings.database).await?;
    let aws = AwsClients::new(&settings.aws).await;
    let queue =
        Queue::from_settings(&aws.sqs, &settings.queues.file_jobs, &settings.queues).await?;
    let embedder = shared::embedders::from_settings(&settings.embedding)
        .await
        .context("loading the embedding model")?;
    // Loading the local model leaves about 44 MiB of freed buffers in the heap: return them.
    if settings.embedding.provider == EmbeddingProvider::Local {
        confine::release_free_memory();
    }
    shared::embedders::ensure_index(&pool, embedder.as_ref())
        .await
        .context("creating the model's vector index")?;

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
    let network_confinement = extraction.network().as_str();
    let pdf_engine = extraction.pdf_engine.name();
    let extraction_children = extraction.max_children;
    let handler = FileHandler {
        pool,
        s3: aws.s3.clone(),
        bucket: settings.storage.bucket.clone(),
        embedder,
        settings: worker_settings,
        extraction: Arc::clone(&extraction),
        spool_dir: worker_folder.path().to_path_buf(),
    };
    // Metrics outlive the drain, so the last jobs' outcomes are still scraped.
    let metrics_shutdown = CancellationToken::new();
    let metrics_address =
        shared::metrics::serve(&settings.metrics.listen, metrics_shutdown.clone())
            .await
            .context("binding the metrics listener")?;
    tracing::info!(
        %metrics_address,
        queue = %queue.name,
        model = handler.embedder.model_id(),
        network_confinement,
        pdf_engine,
        extraction_children,
        stale_spool_folders_removed = stale_folders,
        "worker-files ready"
    );
    let handlers = Handlers::new()
        .with(Arc::new(handler))
        .with(Arc::new(ticks));
    run_worker(queue, handlers, options, shutdown).await;
    // Nothing the worker started outlives it: the extraction server and its children.
    extraction.sandbox.stop().await;
    metrics_shutdown.cancel();
    drop(worker_folder);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_slots_follow_the_setting_then_the_embedder() {
        assert_eq!(extraction_slots(3, EmbeddingProvider::Local), 3);
        assert_eq!(extraction_slots(3, EmbeddingProvider::Openai), 3);
        assert_eq!(extraction_slots(0, EmbeddingProvider::Local), 1);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(extraction_slots(0, EmbeddingProvider::Openai), cores);
    }
}
