//! Text extraction: turns an untrusted file on local disk into normalized page texts.
//!
//! # Layout
//! - [`detect`]: decides the [`DocumentKind`] from the content (magic bytes), not the name.
//! - [`error`]: [`ExtractError`], one variant per permanent error code plus the sandbox outcomes.
//! - [`normalize`]: [`normalize_text`], the one place that cleans up whitespace, ligatures and hyphenation.
//! - [`pdf`]: PDF pages through pdf-extract, after an encryption and page-count check with lopdf.
//! - [`docx`]: ZIP bomb guard (declared sizes, ratio, then a streaming re-check) and the docx-rs walk.
//! - [`text`]: HTML (html2text), Markdown and plain text.
//! - [`sandbox`]: [`extract_isolated`] (parent side) and [`child_main`] (child side): extraction runs in a
//!   child process with rlimits and a wall-clock timeout, because parsers of hostile files panic, overflow
//!   their stack and loop.
//!
//! This module is self-contained on purpose (only external crates and its own submodules), so it can be
//! compiled and tested on its own.

/// Content sniffing: magic bytes first, the declared type and the name only break ties between text kinds.
mod detect;
/// DOCX: ZIP bomb guard and document walk.
mod docx;
/// The typed extraction error and its stable codes.
mod error;
/// Text normalization shared by every kind.
mod normalize;
/// PDF: encryption check, page limit, page-by-page text.
mod pdf;
/// Child process isolation: rlimits, timeout, crash mapping.
mod sandbox;
/// HTML, Markdown and plain text.
mod text;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use detect::detect_kind;
pub use error::ExtractError;
pub use normalize::normalize_text;
pub use sandbox::{child_main, extract_isolated};

/// Version of the extraction logic (it lives in `shared` so api-lite's `reextract`
/// schedules can compare against it). Bump it whenever the text for the same file may change.
pub use shared::EXTRACTOR_VERSION;

/// The kinds of documents we extract text from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Pdf,
    Docx,
    Html,
    Markdown,
    Text,
}

impl DocumentKind {
    /// Stable lowercase name, also used on the child's command line and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Pdf => "pdf",
            DocumentKind::Docx => "docx",
            DocumentKind::Html => "html",
            DocumentKind::Markdown => "markdown",
            DocumentKind::Text => "text",
        }
    }

    /// Inverse of [`DocumentKind::as_str`].
    pub fn parse(name: &str) -> Option<DocumentKind> {
        match name {
            "pdf" => Some(DocumentKind::Pdf),
            "docx" => Some(DocumentKind::Docx),
            "html" => Some(DocumentKind::Html),
            "markdown" => Some(DocumentKind::Markdown),
            "text" => Some(DocumentKind::Text),
            _ => None,
        }
    }
}

impl std::fmt::Display for DocumentKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Limits applied to one extraction. Every limit turns into a typed error, never a crash of the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractLimits {
    /// PDFs with more pages are rejected as `too_large` before any page is parsed.
    pub max_pages: u32,
    /// DOCX (ZIP) archives with more entries are rejected as `zip_bomb`.
    pub docx_max_entries: usize,
    /// Cap on the uncompressed size of one entry and of all entries together.
    pub docx_max_uncompressed_bytes: u64,
    /// Highest uncompressed/compressed ratio allowed for entries larger than
    /// [`ExtractLimits::docx_ratio_min_entry_bytes`]; small XML parts legitimately compress very well.
    pub docx_max_ratio: u64,
    /// Entries smaller than this are exempt from the ratio check.
    pub docx_ratio_min_entry_bytes: u64,
    /// Cap on the extracted text (UTF-8 bytes, after normalization). Plain text and Markdown inputs are
    /// capped at this size too; HTML inputs at four times this size, to leave room for markup.
    pub max_text_bytes: u64,
    /// Address-space limit of the extraction child (RLIMIT_AS).
    pub child_memory_bytes: u64,
    /// CPU-time limit of the extraction child (RLIMIT_CPU).
    pub child_cpu_seconds: u64,
    /// Wall-clock limit enforced by the parent; the child is killed after it.
    pub wall_timeout_secs: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_pages: 2_000,
            docx_max_entries: 5_000,
            docx_max_uncompressed_bytes: 256 * MIB,
            docx_max_ratio: 200,
            docx_ratio_min_entry_bytes: MIB,
            max_text_bytes: 32 * MIB,
            child_memory_bytes: 1024 * MIB,
            child_cpu_seconds: 60,
            wall_timeout_secs: 90,
        }
    }
}

impl ExtractLimits {
    /// The wall-clock timeout as a [`std::time::Duration`].
    pub fn wall_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.wall_timeout_secs)
    }
}

const MIB: u64 = 1024 * 1024;

/// One page of extracted text.
///
/// PDF pages carry their 1-based page number. DOCX, HTML, Markdown and text have no reliable page notion,
/// so they produce exactly one `Page` with `number: None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub number: Option<u32>,
    pub text: String,
}

/// The result of a successful extraction. Page texts are normalized with [`normalize_text`];
/// at least one page has non-empty text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractedDocument {
    pub kind: DocumentKind,
    pub pages: Vec<Page>,
    /// [`EXTRACTOR_VERSION`] at extraction time.
    pub extractor_version: u32,
}

impl ExtractedDocument {
    /// Total size of the page texts in bytes.
    pub fn text_bytes(&self) -> u64 {
        self.pages.iter().map(|page| page.text.len() as u64).sum()
    }
}

/// Extracts and normalizes the text of `path` in this process.
///
/// Used by the extraction child and by benchmarks. Panics inside the PDF and DOCX parsers are caught and
/// returned as `extract_crashed`, but a stack overflow or an endless loop would still take the calling
/// process down with it: workers must go through [`extract_isolated`].
pub fn extract_path(
    path: &Path,
    kind: DocumentKind,
    limits: &ExtractLimits,
) -> Result<ExtractedDocument, ExtractError> {
    let pages = match kind {
        DocumentKind::Pdf => pdf::extract_pdf(path, limits)?,
        DocumentKind::Docx => vec![Page {
            number: None,
            text: docx::extract_docx(path, limits)?,
        }],
        DocumentKind::Html => vec![Page {
            number: None,
            text: text::extract_html(path, limits)?,
        }],
        DocumentKind::Markdown | DocumentKind::Text => {
            vec![Page {
                number: None,
                text: text::extract_plain(path, limits)?,
            }]
        }
    };
    let document = ExtractedDocument {
        kind,
        pages,
        extractor_version: EXTRACTOR_VERSION,
    };
    check_extracted(&document, limits)?;
    Ok(document)
}

/// Final checks shared by every kind: some text, and not too much of it.
fn check_extracted(
    document: &ExtractedDocument,
    limits: &ExtractLimits,
) -> Result<(), ExtractError> {
    let text_bytes = document.text_bytes();
    if text_bytes > limits.max_text_bytes {
        return Err(ExtractError::TooLarge {
            detail: format!(
                "extracted text is {}, limit {}",
                error::human_bytes(text_bytes),
                error::human_bytes(limits.max_text_bytes)
            ),
        });
    }
    if document.pages.iter().all(|page| page.text.is_empty()) {
        let detail = match document.kind {
            DocumentKind::Pdf => format!(
                "PDF has {} page(s) but no extractable text (scanned PDF? no text layer)",
                document.pages.len()
            ),
            other => format!("{other} document contains no text"),
        };
        return Err(ExtractError::EmptyText { detail });
    }
    Ok(())
}

/// Reads a panic payload as text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        return (*message).to_owned();
    }
    if let Some(message) = payload.downcast_ref::<String>() {
        return message.clone();
    }
    "panic with a non-text payload".to_owned()
}
