use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::OnceLock;

use lopdf::Document;
use pdfium_render::prelude::{
    PdfBookmark, PdfDocument, PdfPage, Pdfium, PdfiumError, PdfiumInternalError,
};

use super::error::human_bytes;
use super::layout::{self, LayoutChar};
use super::ocr;
use super::structure::{self, Heading};
use super::{ExtractError, ExtractLimits, Page, PdfEngine, normalize_text, panic_message};

/// Extracts the pages of a PDF with `engine`, each with its 1-based number.
///
/// A PDF that needs a password is `encrypted`; one whose user password is empty (permission flags only,
/// opened by any viewer without a prompt) is extracted. Too many pages is `too_large` before any page is
/// read. A page that cannot be read yields an empty page (the rest of the document is still useful); when
/// every page fails the document is `corrupt`.
pub(super) fn extract_pdf(
    path: &Path,
    engine: &PdfEngine,
    limits: &ExtractLimits,
) -> Result<Vec<Page>, ExtractError> {
    match engine {
        PdfEngine::Pdfium { library } => extract_with_pdfium(path, library, limits),
        PdfEngine::PdfExtract => extract_with_pdf_extract(path, limits),
    }
}

/// Loads libpdfium from `library` (the file itself, or a folder holding `libpdfium.so`), once per process:
/// pdfium-render keeps its bindings in a process-wide cell, so later calls share the first library.
///
/// A library that cannot be loaded is an `io_error` (transient: the deployment is at fault, not the file).
pub fn load_pdfium(library: &Path) -> Result<&'static Pdfium, ExtractError> {
    static PDFIUM: OnceLock<Result<Pdfium, String>> = OnceLock::new();
    let loaded = PDFIUM.get_or_init(|| {
        let library_file = if library.is_dir() {
            Pdfium::pdfium_platform_library_name_at_path(library)
        } else {
            library.to_path_buf()
        };
        Pdfium::bind_to_library(&library_file)
            .map(Pdfium::new)
            .map_err(|error| {
                format!(
                    "cannot load libpdfium from {}: {error}",
                    library_file.display()
                )
            })
    });
    loaded.as_ref().map_err(|detail| ExtractError::Io {
        detail: detail.clone(),
    })
}

fn extract_with_pdfium(
    path: &Path,
    library: &Path,
    limits: &ExtractLimits,
) -> Result<Vec<Page>, ExtractError> {
    let pdfium = load_pdfium(library)?;
    let bytes = std::fs::read(path).map_err(|error| ExtractError::io("read pdf", &error))?;
    let document = pdfium
        .load_pdf_from_byte_slice(&bytes, None)
        .map_err(|error| pdfium_load_error(&error, &bytes))?;
    let page_count = u32::try_from(document.pages().len()).unwrap_or(0);
    if page_count == 0 {
        return Err(ExtractError::Corrupt {
            detail: "PDF has no pages (broken page tree)".to_owned(),
        });
    }
    if page_count > limits.max_pages {
        return Err(ExtractError::TooLarge {
            detail: format!("PDF has {page_count} pages, limit {}", limits.max_pages),
        });
    }
    let mut pages = Vec::with_capacity(page_count as usize);
    let mut failed_pages = Vec::new();
    let mut text_bytes: u64 = 0;
    let mut characters = Vec::new();
    let mut ocr_reader = ocr::PageReader::new(limits);
    for index in 0..page_count {
        let page_number = index + 1;
        let mut text = match pdfium_page_characters(&document, index, &mut characters) {
            Ok(()) => normalize_text(&layout::page_text(&characters)),
            Err(page_error) => {
                tracing::warn!(page_number, error = %page_error, "pdf page could not be extracted");
                failed_pages.push((page_number, page_error.to_string()));
                String::new()
            }
        };
        let mut read_by_ocr = false;
        if text.is_empty() && ocr_reader.has_budget() {
            match ocr_page(&document, index, &mut ocr_reader) {
                Ok(ocr_text) => {
                    read_by_ocr = !ocr_text.is_empty();
                    text = ocr_text;
                }
                Err(ocr_error) => {
                    tracing::warn!(page_number, error = %ocr_error, "pdf page without text could not be read by ocr");
                    if matches!(ocr_error, ExtractError::Io { .. }) {
                        ocr_reader.switch_off();
                    }
                }
            }
        }
        text_bytes += text.len() as u64;
        check_text_bytes(text_bytes, page_number, limits)?;
        pages.push(Page {
            ocr: read_by_ocr,
            ..Page::new(Some(page_number), text)
        });
    }
    all_pages_failed(&pages, &failed_pages)?;
    for (page_index, level, title) in outline_entries(&document) {
        if let Some(page) = usize::try_from(page_index)
            .ok()
            .and_then(|index| pages.get_mut(index))
        {
            page.headings.push(Heading {
                offset: 0,
                end: 0,
                level,
                title,
            });
        }
    }
    Ok(pages)
}

/// Renders page `index` (0-based) and reads it by OCR.
fn ocr_page(
    document: &PdfDocument<'_>,
    index: u32,
    reader: &mut ocr::PageReader,
) -> Result<String, ExtractError> {
    let page_index = i32::try_from(index).unwrap_or(i32::MAX);
    let page = document
        .pages()
        .get(page_index)
        .map_err(|error| ExtractError::Corrupt {
            detail: format!("page {} cannot be opened for OCR: {error}", index + 1),
        })?;
    reader.read_pdf_page(&page)
}

/// Outline entries read at most: the outline is a linked structure a hostile file can make
/// cyclic or huge.
const MAX_OUTLINE_ENTRIES: usize = 10_000;

/// The PDF's outline (bookmarks) as `(0-based page index, level, title)`, in outline order
/// (depth first), for entries whose destination is a page of this document.
fn outline_entries(document: &PdfDocument<'_>) -> Vec<(i32, u8, String)> {
    let mut entries = Vec::new();
    let bookmarks = document.bookmarks();
    let mut pending: Vec<(PdfBookmark<'_>, u8)> =
        bookmarks.root().map(|root| (root, 1)).into_iter().collect();
    let mut visited = 0;
    while let Some((bookmark, level)) = pending.pop() {
        visited += 1;
        if visited > MAX_OUTLINE_ENTRIES {
            break;
        }
        if let Some(sibling) = bookmark.next_sibling() {
            pending.push((sibling, level));
        }
        if let Some(child) = bookmark.first_child() {
            pending.push((child, level.saturating_add(1).min(structure::MAX_LEVEL)));
        }
        let Some(title) = bookmark.title().map(|title| structure::short_title(&title)) else {
            continue;
        };
        // A destination of its own, or (LaTeX's hyperref) a GoTo action holding one.
        let page_index = bookmark
            .destination()
            .and_then(|destination| destination.page_index().ok())
            .or_else(|| {
                let action = bookmark.action()?;
                let local = action.as_local_destination_action()?;
                local.destination().ok()?.page_index().ok()
            });
        if let Some(page_index) = page_index
            && !title.is_empty()
        {
            entries.push((page_index, level, title));
        }
    }
    entries
}

/// The characters of page `index` (0-based) with their loose boxes, into `characters`.
fn pdfium_page_characters(
    document: &PdfDocument<'_>,
    index: u32,
    characters: &mut Vec<LayoutChar>,
) -> Result<(), PdfiumError> {
    characters.clear();
    let page_index = i32::try_from(index).map_err(|_| PdfiumError::PageIndexOutOfBounds)?;
    let page: PdfPage<'_> = document.pages().get(page_index)?;
    let text = page.text()?;
    for character in text.chars().iter() {
        let Some(unicode) = character.unicode_char() else {
            continue;
        };
        let bounds = match character.loose_bounds() {
            Ok(bounds) => bounds,
            // Generated spaces and line breaks may have no box; their meaning is in the character.
            Err(_) => pdfium_render::prelude::PdfRect::zero(),
        };
        characters.push(LayoutChar {
            character: unicode,
            left: bounds.left().value,
            right: bounds.right().value,
            bottom: bounds.bottom().value,
            top: bounds.top().value,
        });
    }
    Ok(())
}

fn pdfium_load_error(error: &PdfiumError, bytes: &[u8]) -> ExtractError {
    match error {
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::PasswordError) => {
            ExtractError::Encrypted {
                detail: "PDF needs a password to open; password-protected PDFs are not extracted"
                    .to_owned(),
            }
        }
        PdfiumError::PdfiumLibraryInternalError(PdfiumInternalError::SecurityError) => {
            ExtractError::Encrypted {
                detail: format!(
                    "PDF uses an unsupported security handler{}",
                    if mentions_encryption(bytes) {
                        " (/Encrypt in trailer)"
                    } else {
                        ""
                    }
                ),
            }
        }
        other => ExtractError::Corrupt {
            detail: format!("PDF structure cannot be read: {other}"),
        },
    }
}

fn check_text_bytes(
    text_bytes: u64,
    page_number: u32,
    limits: &ExtractLimits,
) -> Result<(), ExtractError> {
    if text_bytes > limits.max_text_bytes {
        return Err(ExtractError::TooLarge {
            detail: format!(
                "extracted text exceeds {} after {page_number} page(s)",
                human_bytes(limits.max_text_bytes)
            ),
        });
    }
    Ok(())
}

fn all_pages_failed(pages: &[Page], failed_pages: &[(u32, String)]) -> Result<(), ExtractError> {
    if let Some((first_page, first_error)) = failed_pages.first()
        && failed_pages.len() == pages.len()
    {
        return Err(ExtractError::Corrupt {
            detail: format!("no PDF page could be read; page {first_page}: {first_error}"),
        });
    }
    Ok(())
}

/// pdf-extract, after lopdf's encryption and page-count checks. A panic inside pdf-extract becomes
/// `extract_crashed`.
fn extract_with_pdf_extract(
    path: &Path,
    limits: &ExtractLimits,
) -> Result<Vec<Page>, ExtractError> {
    let bytes = std::fs::read(path).map_err(|error| ExtractError::io("read pdf", &error))?;
    let document = load_document(&bytes)?;
    drop(bytes);

    let page_numbers: Vec<u32> = document.get_pages().into_keys().collect();
    if page_numbers.is_empty() {
        return Err(ExtractError::Corrupt {
            detail: "PDF has no pages (broken page tree)".to_owned(),
        });
    }
    if page_numbers.len() > limits.max_pages as usize {
        return Err(ExtractError::TooLarge {
            detail: format!(
                "PDF has {} pages, limit {}",
                page_numbers.len(),
                limits.max_pages
            ),
        });
    }

    let mut pages = Vec::with_capacity(page_numbers.len());
    let mut failed_pages = Vec::new();
    let mut text_bytes: u64 = 0;
    for page_number in page_numbers {
        let text = match extract_page(&document, page_number)? {
            Ok(raw_text) => normalize_text(&raw_text),
            Err(page_error) => {
                tracing::warn!(page_number, error = %page_error, "pdf page could not be extracted");
                failed_pages.push((page_number, page_error));
                String::new()
            }
        };
        text_bytes += text.len() as u64;
        check_text_bytes(text_bytes, page_number, limits)?;
        pages.push(Page::new(Some(page_number), text));
    }
    all_pages_failed(&pages, &failed_pages)?;
    Ok(pages)
}

/// Loads the document with lopdf and rejects encrypted files.
fn load_document(bytes: &[u8]) -> Result<Document, ExtractError> {
    let document = match Document::load_mem(bytes) {
        Ok(document) => document,
        // lopdf cannot always load files it cannot decrypt; the trailer still says why.
        Err(_) if mentions_encryption(bytes) => {
            return Err(ExtractError::Encrypted {
                detail: "PDF is password protected (/Encrypt in trailer); encrypted PDFs are not extracted".to_owned(),
            });
        }
        Err(error) => {
            return Err(ExtractError::Corrupt {
                detail: format!("PDF structure cannot be read: {error}"),
            });
        }
    };
    // A file whose user password is empty opens in every viewer without a prompt (it is
    // "encrypted" only to carry permission flags); lopdf decrypts it on load, and we
    // extract it like any other. Only a file that really needs a password is refused.
    if document.is_encrypted() {
        return Err(ExtractError::Encrypted {
            detail: "PDF needs a password to open; password-protected PDFs are not extracted"
                .to_owned(),
        });
    }
    Ok(document)
}

fn mentions_encryption(bytes: &[u8]) -> bool {
    bytes
        .windows(b"/Encrypt".len())
        .any(|window| window == b"/Encrypt")
}

/// Runs pdf-extract on one page. The outer error is a panic (fatal for the document), the inner one a
/// parse error limited to this page.
fn extract_page(
    document: &Document,
    page_number: u32,
) -> Result<Result<String, String>, ExtractError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut text = String::new();
        let result = {
            let mut output = pdf_extract::PlainTextOutput::new(&mut text);
            pdf_extract::output_doc_page(document, &mut output, page_number)
        };
        result.map(|()| text).map_err(|error| error.to_string())
    }));
    outcome.map_err(|payload| ExtractError::ExtractCrashed {
        detail: format!(
            "pdf extractor panicked on page {page_number}: {}",
            panic_message(payload.as_ref())
        ),
    })
}
