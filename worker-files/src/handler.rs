//! The file job: claim the file's fenced lease, then download, extract (in a child
//! process), chunk, embed and store, recording stage and timings on the row as it goes.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use shared::config::FilesWorkerSettings;
use shared::embed::{EmbedError, Embedder};
use shared::error::JobError;
use shared::files::{self, Stored};
use shared::lease::{self, LeasedTable};
use shared::queue::{JobKind, JobMessage};
use shared::worker::{Claim, Disposition, JobHandler, Receipt};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};
use uuid::Uuid;

use crate::ExtractionSetup;
use crate::extract::{self, sandbox::ChildRequest};
use crate::store::{self, EmbeddedChunk};
use crate::{download, failpoint};

pub struct FileHandler {
    pub pool: PgPool,
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
    pub embedder: Arc<dyn Embedder>,
    pub settings: FilesWorkerSettings,
    /// The confined child that detects, extracts and chunks, and what it is told.
    pub extraction: Arc<ExtractionSetup>,
    /// The worker's private spool folder (see [`crate::scratch`]).
    pub spool_dir: PathBuf,
}

#[derive(sqlx::FromRow)]
struct FileRow {
    org_id: Uuid,
    name: String,
    content_type: String,
    object_key: String,
}

/// Milliseconds per stage for the current attempt, shown by `GET /v1/files/{id}`.
#[derive(Default)]
struct StageTimings(BTreeMap<&'static str, u64>);

impl StageTimings {
    fn record(&mut self, stage: &'static str, started: Instant) {
        self.record_duration(stage, started.elapsed());
    }

    fn record_duration(&mut self, stage: &'static str, elapsed: std::time::Duration) {
        metrics::histogram!(shared::metrics::STAGE_SECONDS, "kind" => "file.process", "stage" => stage).record(elapsed.as_secs_f64());
        self.0.insert(stage, elapsed.as_millis() as u64);
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }
}

fn lease_lost() -> JobError {
    JobError::LeaseLost {
        message: "another worker owns this file now, or it was deleted or reprocessed".into(),
    }
}

fn cancelled() -> JobError {
    JobError::transient(
        "cancelled",
        "stopped before finishing (shutdown or lost lease)",
    )
}

fn extract_error(error: extract::ExtractError) -> JobError {
    if error.is_permanent() {
        JobError::permanent(error.code(), error.to_string())
    } else {
        // The document is not at fault (spool file gone, child could not start): try again.
        JobError::transient(error.code(), error.to_string())
    }
}

fn embed_error(error: EmbedError) -> JobError {
    match error {
        EmbedError::Transient {
            message,
            retry_after,
        } => JobError::Transient {
            code: "embedding_unavailable".into(),
            message,
            retry_after,
        },
        EmbedError::Permanent { code, message } => JobError::permanent(code, message),
    }
}

impl FileHandler {
    /// Moves the row to `stage` with the timings so far; fails when the lease is gone.
    async fn enter_stage(
        &self,
        file_id: Uuid,
        lease: Uuid,
        stage: &str,
        timings: &StageTimings,
    ) -> Result<(), JobError> {
        if !files::enter_stage(&self.pool, file_id, lease, stage, &timings.to_json()).await? {
            return Err(lease_lost());
        }
        Ok(())
    }

    async fn process(
        &self,
        job: &JobMessage,
        lease: Uuid,
        cancel: &CancellationToken,
    ) -> Result<(), JobError> {
        let file_id = job.job_id;
        let row: Option<FileRow> = sqlx::query_as("SELECT org_id, name, content_type, object_key FROM files WHERE id = $1 AND lease_token = $2")
            .bind(file_id)
            .bind(lease)
            .fetch_optional(&self.pool)
            .await?;
        let row = row.ok_or_else(lease_lost)?;
        if row.org_id != job.org_id {
            return Err(JobError::permanent(
                "org_mismatch",
                "the message's org does not own this file",
            ));
        }
        let mut timings = StageTimings::default();

        let started = Instant::now();
        let downloaded = until_cancelled(
            cancel,
            download::download(
                &self.s3,
                &self.bucket,
                &row.object_key,
                self.settings.max_file_bytes,
                &self.spool_dir,
            )
            .instrument(info_span!("download")),
        )
        .await?;
        timings.record("download", started);
        let content_sha256 = downloaded.sha256.clone();
        failpoint::hit(
            self.settings.failpoint.as_deref(),
            failpoint::AFTER_DOWNLOAD,
            cancel,
        )
        .await;

        self.enter_stage(file_id, lease, "extract", &timings)
            .await?;
        // Detection, extraction and chunking all run in the confined child: this process
        // never parses, tokenizes or splits the file's bytes.
        let started = Instant::now();
        let setup = &self.extraction;
        let request = ChildRequest {
            path: downloaded.file.path().to_path_buf(),
            kind: None,
            content_type: Some(row.content_type.clone()),
            name: Some(row.name.clone()),
            pdf_engine: setup.pdf_engine.clone(),
            limits: setup.limits.clone(),
            chunking: Some(setup.chunking.clone()),
            include_texts: false,
        };
        let extraction = until_cancelled(
            cancel,
            async {
                // Waiting for a slot counts as extraction time; a cancel ends the wait too.
                let _slot = setup.slots.acquire().await.map_err(|_| {
                    JobError::transient("io_error", "the extraction slots are closed")
                })?;
                setup.sandbox.run(&request).await.map_err(extract_error)
            }
            .instrument(info_span!("extract_and_chunk")),
        )
        .await?;
        drop(downloaded);
        // The child's own split between the two; the rest (start, transfer) counts as extraction.
        let child_chunk = std::time::Duration::from_millis(extraction.chunk_ms);
        let child_peak_rss_kib = extraction.peak_rss_kib;
        timings.record_duration("extract", started.elapsed().saturating_sub(child_chunk));
        timings.record_duration("chunk", child_chunk);
        let document = extraction.document;
        let kind = document.kind;
        let chunks = extraction.chunks;
        if chunks.is_empty() {
            return Err(JobError::permanent(
                "empty_text",
                "the file has no text to index",
            ));
        }

        self.enter_stage(file_id, lease, "embed", &timings).await?;
        let started = Instant::now();
        let hashes: Vec<[u8; 32]> = chunks
            .iter()
            .map(|chunk| store::text_sha256(&chunk.text))
            .collect();
        let vectors = until_cancelled(
            cancel,
            self.embed_with_reuse(row.org_id, &chunks, &hashes)
                .instrument(info_span!("embed", chunks = chunks.len())),
        )
        .await?;
        timings.record("embed", started);

        self.enter_stage(file_id, lease, "store", &timings).await?;
        failpoint::hit(
            self.settings.failpoint.as_deref(),
            failpoint::BEFORE_STORE,
            cancel,
        )
        .await;
        if cancel.is_cancelled() {
            return Err(cancelled());
        }
        let started = Instant::now();
        let embedded: Vec<EmbeddedChunk<'_>> = chunks
            .iter()
            .zip(&hashes)
            .map(|(chunk, hash)| EmbeddedChunk {
                chunk,
                text_sha256: *hash,
                embedding: &vectors[hash],
            })
            .collect();
        let page_count = document.page_count() as i32;
        async {
            let mut transaction = self.pool.begin().await?;
            if !files::fence(&mut transaction, file_id, lease).await? {
                return Err(lease_lost());
            }
            sqlx::query("DELETE FROM chunks WHERE file_id = $1")
                .bind(file_id)
                .execute(&mut *transaction)
                .await?;
            store::copy_chunks(
                &mut transaction,
                row.org_id,
                file_id,
                self.embedder.model_id(),
                &embedded,
            )
            .await?;
            timings.record("store", started);
            let stored = Stored {
                detected_type: kind.as_str(),
                pages: page_count,
                chunk_count: chunks.len() as i32,
                embedding_model: self.embedder.model_id(),
                extractor_version: document.extractor_version as i32,
                content_sha256: &content_sha256,
                stage_durations_ms: timings.to_json(),
                extraction_engine: &document.engine,
            };
            if !files::mark_ready(&mut transaction, file_id, lease, &stored).await? {
                return Err(lease_lost());
            }
            transaction.commit().await?;
            Ok::<(), JobError>(())
        }
        .instrument(info_span!("store", chunks = chunks.len()))
        .await?;
        tracing::info!(
            chunks = chunks.len(),
            pages = page_count,
            kind = kind.as_str(),
            engine = %document.engine,
            child_peak_rss_kib,
            "file stored"
        );
        Ok(())
    }

    /// Vectors for every distinct chunk text: reused when this org already embedded the
    /// same text with the same model, computed in batches otherwise.
    async fn embed_with_reuse(
        &self,
        org_id: Uuid,
        chunks: &[crate::chunk::Chunk],
        hashes: &[[u8; 32]],
    ) -> Result<HashMap<[u8; 32], Vec<f32>>, JobError> {
        let model_id = self.embedder.model_id();
        let distinct: Vec<Vec<u8>> = {
            let mut seen = std::collections::HashSet::new();
            hashes
                .iter()
                .filter(|hash| seen.insert(**hash))
                .map(|hash| hash.to_vec())
                .collect()
        };
        let mut vectors: HashMap<[u8; 32], Vec<f32>> = HashMap::new();
        for (hash, vector) in
            store::reusable_embeddings(&self.pool, org_id, model_id, &distinct).await?
        {
            if let Ok(key) = <[u8; 32]>::try_from(hash.as_slice()) {
                vectors.insert(key, vector.to_vec());
            }
        }
        let reused = vectors.len();
        let mut missing_texts = Vec::new();
        let mut missing_hashes = Vec::new();
        for (chunk, hash) in chunks.iter().zip(hashes) {
            if !vectors.contains_key(hash) && !missing_hashes.contains(hash) {
                missing_hashes.push(*hash);
                missing_texts.push(chunk.text.clone());
            }
        }
        if !missing_texts.is_empty() {
            let computed = self
                .embedder
                .embed(&missing_texts)
                .await
                .map_err(embed_error)?;
            if computed.len() != missing_texts.len() {
                return Err(JobError::transient(
                    "embedding_unavailable",
                    format!(
                        "asked for {} vectors, got {}",
                        missing_texts.len(),
                        computed.len()
                    ),
                ));
            }
            vectors.extend(missing_hashes.into_iter().zip(computed));
        }
        tracing::info!(
            reused,
            embedded = vectors.len() - reused,
            "embeddings ready"
        );
        Ok(vectors)
    }
}

/// Runs `work` unless `cancel` fires first.
async fn until_cancelled<T>(
    cancel: &CancellationToken,
    work: impl Future<Output = Result<T, JobError>>,
) -> Result<T, JobError> {
    tokio::select! {
        result = work => result,
        _ = cancel.cancelled() => Err(cancelled()),
    }
}

#[async_trait]
impl JobHandler for FileHandler {
    fn kind(&self) -> JobKind {
        JobKind::FileProcess
    }

    async fn claim(&self, job: &JobMessage, receipt: Receipt<'_>) -> Result<Claim, JobError> {
        Ok(files::claim(
            &self.pool,
            job.job_id,
            job.org_id,
            self.settings.lease(),
            receipt,
        )
        .await?)
    }

    async fn run(
        &self,
        job: &JobMessage,
        lease: Uuid,
        attempt: u32,
        cancel: CancellationToken,
    ) -> Result<(), JobError> {
        tracing::debug!(attempt, "processing file");
        self.process(job, lease, &cancel).await
    }

    async fn renew(&self, job: &JobMessage, lease: Uuid) -> Result<bool, JobError> {
        Ok(lease::renew(
            &self.pool,
            LeasedTable::Files,
            job.job_id,
            lease,
            self.settings.lease(),
        )
        .await?)
    }

    async fn record_failure(
        &self,
        job: &JobMessage,
        lease: Uuid,
        error: &JobError,
        disposition: Disposition,
    ) -> Result<(), JobError> {
        files::record_failure(&self.pool, job.job_id, lease, error, disposition).await?;
        Ok(())
    }

    async fn release(&self, job: &JobMessage, lease: Uuid) -> Result<(), JobError> {
        files::release(&self.pool, job.job_id, lease).await?;
        Ok(())
    }
}
