//! Text extraction: turns an untrusted file on local disk into normalized, labelled texts.
//!
//! # Layout
//! - [`detect`]: decides the [`DocumentKind`] from the content (magic bytes, BOMs), not the name.
//! - [`error`]: [`ExtractError`], one variant per permanent error code plus the sandbox outcomes.
//! - [`normalize`]: [`normalize_text`], the one place that cleans up whitespace, ligatures and hyphenation.
//! - [`pdf`]: the two PDF engines behind [`PdfEngine`]: pdfium (C++, loaded at run time) with
//!   [`layout`]'s reading order, and pdf-extract (pure Rust), after an encryption and page-count check.
//! - [`layout`]: reading order for pdfium's characters: lines, blocks, columns read as columns.
//! - [`archive`]: the one capped inflation path of every ZIP-based format; [`ooxml`]: their XML helpers.
//! - [`docx`]: a streaming XML walk of every text part of a DOCX.
//! - [`pptx`], [`spreadsheet`] (XLSX, CSV), [`epub`]: slides and notes, sheets' rows with their
//!   headers, chapters.
//! - [`text`]: HTML (html5ever's tokenizer, linear at any nesting depth), Markdown and plain text
//!   (UTF-8/16/32 BOMs, invalid UTF-8 replaced).
//! - [`structure`]: headings (HTML `h1`–`h6`, DOCX heading styles, Markdown, PDF outlines), so chunks
//!   start at sections and carry their heading path.
//! - [`ocr`]: Tesseract on PDF pages without a text layer (rendered by pdfium) and on PNG, JPEG
//!   and TIFF images, within a page budget per file.
//! - [`sandbox`]: the confined child: [`sandbox::Sandbox::run`] on the worker's side, [`child_main`] on
//!   the child's. Detection, extraction *and chunking* run there, because parsers of hostile files panic,
//!   overflow their stack, loop, and pdfium is C++.
//!
//! The worker process itself never parses, tokenizes or splits untrusted bytes: it hands the child a path
//! and gets chunks back.

/// ZIP-based formats: the central directory checked, entries inflated within the limits.
mod archive;
/// Content sniffing: magic bytes and BOMs first, the declared type and the name only break ties between text kinds.
mod detect;
/// DOCX: ZIP limits on the bytes that are parsed, and the XML walk of every text part.
mod docx;
/// EPUB: chapters in spine order.
mod epub;
/// The typed extraction error and its stable codes.
mod error;
/// Reading order of pdfium's characters.
mod layout;
/// Text normalization shared by every kind.
mod normalize;
/// OCR with Tesseract: PDF pages without a text layer, and images.
mod ocr;
/// XML helpers of the ZIP-based formats: attributes, relationships, part paths.
mod ooxml;
/// PDF: the pdfium and pdf-extract engines.
mod pdf;
/// PPTX: slides and speaker notes.
mod pptx;
/// The confined child process: spawning, limits, outcome mapping, and its entry point.
pub mod sandbox;
/// The extraction server: a confined process with pdfium and the tokenizer loaded that forks a
/// child per file.
pub mod server;
/// XLSX and CSV: rows as text with their headers.
mod spreadsheet;
/// Headings of a text: marks readers put around them, Markdown headings, heading paths.
pub mod structure;
/// HTML, Markdown, plain text and the reading of CSV files.
mod text;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use detect::detect_kind;
pub use error::ExtractError;
pub use normalize::normalize_text;
pub use sandbox::{Sandbox, child_main};

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
    Pptx,
    Xlsx,
    Csv,
    Epub,
    /// PNG, JPEG or TIFF, read by OCR.
    Image,
}

impl DocumentKind {
    /// Stable lowercase name, also used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Pdf => "pdf",
            DocumentKind::Docx => "docx",
            DocumentKind::Html => "html",
            DocumentKind::Markdown => "markdown",
            DocumentKind::Text => "text",
            DocumentKind::Pptx => "pptx",
            DocumentKind::Xlsx => "xlsx",
            DocumentKind::Csv => "csv",
            DocumentKind::Epub => "epub",
            DocumentKind::Image => "image",
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
            "pptx" => Some(DocumentKind::Pptx),
            "xlsx" => Some(DocumentKind::Xlsx),
            "csv" => Some(DocumentKind::Csv),
            "epub" => Some(DocumentKind::Epub),
            "image" => Some(DocumentKind::Image),
            _ => None,
        }
    }
}

impl std::fmt::Display for DocumentKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// Which part of a document a text comes from, so a search hit can say where it was found.
/// PDFs, HTML and plain text have only [`TextPart::Body`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextPart {
    Body,
    Table,
    TextBox,
    Footnote,
    Endnote,
    Comment,
    Header,
    Footer,
    /// PPTX speaker notes.
    Notes,
}

impl TextPart {
    /// Stable name, stored in `chunks.part`.
    pub fn as_str(self) -> &'static str {
        match self {
            TextPart::Body => "body",
            TextPart::Table => "table",
            TextPart::TextBox => "text_box",
            TextPart::Footnote => "footnote",
            TextPart::Endnote => "endnote",
            TextPart::Comment => "comment",
            TextPart::Header => "header",
            TextPart::Footer => "footer",
            TextPart::Notes => "notes",
        }
    }
}

/// A PDF engine, resolved: pdfium with the library to load, or pdf-extract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "engine", rename_all = "kebab-case")]
pub enum PdfEngine {
    /// pdfium (Chrome's PDF engine) through pdfium-render; `library` is libpdfium.so.
    Pdfium { library: PathBuf },
    /// pdf-extract, pure Rust: used when libpdfium is absent, or when chosen.
    PdfExtract,
}

impl PdfEngine {
    /// The engine's name as recorded on the file row (`files.extraction_engine`).
    pub fn name(&self) -> &'static str {
        match self {
            PdfEngine::Pdfium { .. } => shared::engines::PDFIUM,
            PdfEngine::PdfExtract => shared::engines::PDF_EXTRACT,
        }
    }
}

/// The name of the engine that reads `kind` (PDFs: the configured one).
pub fn engine_name(kind: DocumentKind, pdf_engine: &PdfEngine) -> &'static str {
    match kind {
        DocumentKind::Pdf => pdf_engine.name(),
        DocumentKind::Docx => shared::engines::DOCX,
        DocumentKind::Html => shared::engines::HTML,
        DocumentKind::Markdown | DocumentKind::Text => shared::engines::TEXT,
        DocumentKind::Pptx => shared::engines::PPTX,
        DocumentKind::Xlsx => shared::engines::XLSX,
        DocumentKind::Csv => shared::engines::CSV,
        DocumentKind::Epub => shared::engines::EPUB,
        DocumentKind::Image => shared::engines::TESSERACT,
    }
}

/// Limits applied to one extraction. Every limit turns into a typed error, never a crash of the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractLimits {
    /// PDFs with more pages are rejected as `too_large` before any page is parsed.
    pub max_pages: u32,
    /// ZIP-based documents (DOCX, PPTX, XLSX, EPUB) with more entries are rejected as
    /// `zip_bomb`. The `docx_*` limits apply to every ZIP-based format.
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
    /// Largest file the child may write into its scratch folder (RLIMIT_FSIZE).
    pub child_file_bytes: u64,
    /// Open file descriptors of the child (RLIMIT_NOFILE).
    pub child_open_files: u64,
    /// Pages of one file that OCR reads at most (PDF pages without a text layer, images);
    /// later pages without text stay empty. 0 switches OCR off. Each page costs about a
    /// second of CPU, which the child's CPU limit must leave room for.
    pub ocr_max_pages: u32,
    /// Resolution PDF pages are rendered at for OCR.
    pub ocr_dots_per_inch: u32,
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
            child_file_bytes: 16 * MIB,
            child_open_files: 64,
            ocr_max_pages: 20,
            ocr_dots_per_inch: 200,
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

/// One labelled text of a document: a PDF page, or a part of a DOCX (body, a table, a text
/// box, the footnotes, ...), or the whole text of HTML, Markdown and plain text.
///
/// PDF pages, PPTX slides, XLSX sheets and EPUB chapters carry their 1-based number; other kinds have
/// no reliable page notion (`number: None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub number: Option<u32>,
    /// Where the text comes from; `None` reads as [`TextPart::Body`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<TextPart>,
    pub text: String,
    /// The headings in `text`, in order (offsets into `text`). A PDF page's outline
    /// entries sit at offset 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headings: Vec<structure::Heading>,
    /// The text was read from an image by OCR.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ocr: bool,
}

impl Page {
    /// A body text with an optional page number.
    pub fn new(number: Option<u32>, text: String) -> Page {
        Page {
            number,
            part: None,
            text,
            headings: Vec::new(),
            ocr: false,
        }
    }

    /// A body text whose headings were marked by its reader (see [`structure`]).
    pub fn with_marked_headings(number: Option<u32>, marked_text: &str) -> Page {
        let (text, headings) = structure::take_heading_marks(marked_text);
        Page {
            headings,
            ..Page::new(number, text)
        }
    }
}

/// The result of a successful extraction. Page texts are normalized with [`normalize_text`];
/// at least one page has non-empty text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractedDocument {
    pub kind: DocumentKind,
    /// The engine that produced the text (see [`engine_name`]).
    pub engine: String,
    pub pages: Vec<Page>,
    /// [`EXTRACTOR_VERSION`] at extraction time.
    pub extractor_version: u32,
}

impl ExtractedDocument {
    /// Total size of the page texts in bytes.
    pub fn text_bytes(&self) -> u64 {
        self.pages.iter().map(|page| page.text.len() as u64).sum()
    }

    /// Pages with a number (PDF pages, slides, sheets, chapters), at least 1.
    pub fn page_count(&self) -> usize {
        self.pages
            .iter()
            .filter_map(|page| page.number)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            .max(1)
    }
}

/// Extracts and normalizes the text of `path` in this process.
///
/// Used by the extraction child, tests and benchmarks. Panics inside the parsers are caught and returned as
/// `extract_crashed`, but a stack overflow, an endless loop or a crash in pdfium would still take the
/// calling process down with it: workers go through [`Sandbox::run`].
pub fn extract_path(
    path: &Path,
    kind: DocumentKind,
    pdf_engine: &PdfEngine,
    limits: &ExtractLimits,
) -> Result<ExtractedDocument, ExtractError> {
    let pages = match kind {
        DocumentKind::Pdf => pdf::extract_pdf(path, pdf_engine, limits)?,
        DocumentKind::Docx => docx::extract_docx(path, limits)?,
        DocumentKind::Html => vec![Page::with_marked_headings(
            None,
            &text::extract_html(path, limits)?,
        )],
        DocumentKind::Markdown => {
            let mut page = Page::new(None, text::extract_plain(path, limits)?);
            page.headings = structure::markdown_headings(&page.text);
            vec![page]
        }
        DocumentKind::Text => vec![Page::new(None, text::extract_plain(path, limits)?)],
        DocumentKind::Pptx => pptx::extract_pptx(path, limits)?,
        DocumentKind::Xlsx => spreadsheet::extract_xlsx(path, limits)?,
        DocumentKind::Csv => vec![text::extract_csv(path, limits)?],
        DocumentKind::Epub => epub::extract_epub(path, limits)?,
        DocumentKind::Image => ocr::extract_image(path, limits)?,
    };
    let document = ExtractedDocument {
        kind,
        engine: engine_name(kind, pdf_engine).to_owned(),
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
