//! What every GlassBox binary shares.
//!
//! # Layout
//! - [`config`]: typed settings from `GLASSBOX_*` environment variables.
//! - [`telemetry`]: logging setup, in one place.
//! - [`metrics`]: the Prometheus recorder, `/metrics`, and the shared metric names.
//! - [`db`]: the Postgres pool and the embedded migrations.
//! - [`aws`]: SQS and S3 clients (real AWS or moto, by endpoint).
//! - [`queue`]: the job message envelope and SQS operations, DLQ included.
//! - [`dlq`]: dead-letter queue operations: peek, move back (one by one or as an SQS
//!   move task), discard.
//! - [`files`]: the file lifecycle: its statuses and every transition, with event rows
//!   and outbox entries.
//! - [`executions`]: the execution lifecycle: statuses, transitions, the worker's step
//!   writes, API control, budgets and the model allowlist.
//! - [`audit`]: the audit log of ops actions.
//! - [`schedules`]: cron schedules in Postgres and their exactly-once fires.
//! - [`outbox`]: enqueue in the caller's transaction; the relay that sends to SQS.
//! - [`embed`]: the [`embed::Embedder`] trait, local candle MiniLM and OpenAI-compatible.
//! - [`embedders`]: builds the configured embedder, the chunking tokenizer, model indexes.
//! - [`openai_http`]: the HTTP call and retry policy every OpenAI-compatible client shares.
//! - [`search`]: vector, text and hybrid search over an org's chunks (the API and the
//!   agent's tool).
//! - [`file_filter`]: which files a search or a file list looks at (ids, types, name
//!   prefix, created-at range, metadata).
//! - [`metadata`]: user metadata on files: limits and JSON merge patch.
//! - [`online_migrations`]: backfills and concurrent index builds a migration cannot do
//!   without blocking ingestion.
//! - [`error`]: [`error::JobError`], the retry decision handlers return.
//! - [`worker`]: the one worker loop: receive, claim, run, ack; heartbeats; shutdown.
//! - [`acker`]: finished jobs' messages deleted ten to a call.
//! - [`lease`]: fenced leases on job rows: renew, fence, what a claim found.
//! - [`shutdown`]: SIGTERM and Ctrl-C as a cancellation token.
//! - [`webhooks`]: per-org endpoints, events written with the state change, signed
//!   durable deliveries with retries, SSRF checks.

/// Deleting finished jobs' messages in batches.
pub mod acker;
/// The audit log of ops actions.
pub mod audit;
/// SQS and S3 clients.
pub mod aws;

/// The version of worker-files' text extraction. Bump it when extraction output changes;
/// a `reextract` schedule reprocesses files extracted by an older version.
/// 2: pdfium engine with layout reading order, chunking in the child, every DOCX part.
/// 3: structure-aware chunks with heading paths (Markdown, HTML, DOCX heading styles, PDF
///    outlines); PPTX, XLSX, CSV and EPUB; OCR of PDF pages without text and of images.
pub const EXTRACTOR_VERSION: u32 = 3;

/// The names of the extraction engines, as recorded in `files.extraction_engine` and
/// accepted by a `reextract` schedule's `engine` filter.
pub mod engines {
    /// PDFs through pdfium (libpdfium loaded at run time).
    pub const PDFIUM: &str = "pdfium";
    /// PDFs through pdf-extract (pure Rust).
    pub const PDF_EXTRACT: &str = "pdf-extract";
    /// DOCX: the ZIP and XML reader of worker-files.
    pub const DOCX: &str = "docx";
    /// HTML: html5ever's tokenizer.
    pub const HTML: &str = "html";
    /// Plain text and Markdown.
    pub const TEXT: &str = "text";
    /// PPTX: slides and speaker notes.
    pub const PPTX: &str = "pptx";
    /// XLSX: sheets' rows.
    pub const XLSX: &str = "xlsx";
    /// CSV: one sheet.
    pub const CSV: &str = "csv";
    /// EPUB: chapters, read as HTML.
    pub const EPUB: &str = "epub";
    /// PNG, JPEG and TIFF images: Tesseract OCR.
    pub const TESSERACT: &str = "tesseract";
    /// Every engine name.
    pub const ALL: [&str; 10] = [
        PDFIUM,
        PDF_EXTRACT,
        DOCX,
        HTML,
        TEXT,
        PPTX,
        XLSX,
        CSV,
        EPUB,
        TESSERACT,
    ];
}
/// Typed settings from the environment.
pub mod config;
/// Postgres pool and migrations.
pub mod db;
/// Dead-letter queue operations.
pub mod dlq;
/// Embedders: local all-MiniLM-L6-v2 (candle) and OpenAI-compatible endpoints.
pub mod embed;
/// Builds the configured embedder and its index.
pub mod embedders;
/// The retry decision of a failed job.
pub mod error;
/// The execution lifecycle.
pub mod executions;
/// Filters on files for search and the file list.
pub mod file_filter;
/// The file lifecycle.
pub mod files;
/// Fenced leases on job rows.
pub mod lease;
/// User metadata on files: limits and merge patch.
pub mod metadata;
/// Prometheus metrics.
pub mod metrics;
/// Backfills and concurrent index builds after the migrations.
pub mod online_migrations;
/// The OpenAI-compatible HTTP client shared by the embedder and the agent's model.
pub mod openai_http;
/// Transactional outbox and its relay.
pub mod outbox;
/// Job messages and SQS queues.
pub mod queue;
/// Cron schedules and their exactly-once fires.
pub mod schedules;
/// Vector, text and hybrid search over an org's chunks.
pub mod search;
/// Signal handling.
pub mod shutdown;
/// Logging setup.
pub mod telemetry;
/// Webhook endpoints, events, signatures and the delivery dispatcher.
pub mod webhooks;
/// The shared worker loop.
pub mod worker;
