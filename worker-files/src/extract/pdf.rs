use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use lopdf::Document;

use super::error::human_bytes;
use super::{ExtractError, ExtractLimits, Page, normalize_text, panic_message};

/// Extracts the pages of a PDF, each with its 1-based number.
///
/// A PDF that needs a password is rejected as `encrypted`; one whose user password is empty (permission
/// flags only, opened by any viewer without a prompt) is decrypted by lopdf and extracted. A page on which
/// pdf-extract reports an error yields an empty page (the rest of the document is still useful); when every
/// page fails the document is `corrupt`. A panic inside pdf-extract becomes `extract_crashed`.
pub(super) fn extract_pdf(path: &Path, limits: &ExtractLimits) -> Result<Vec<Page>, ExtractError> {
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
        if text_bytes > limits.max_text_bytes {
            return Err(ExtractError::TooLarge {
                detail: format!(
                    "extracted text exceeds {} after {page_number} page(s)",
                    human_bytes(limits.max_text_bytes)
                ),
            });
        }
        pages.push(Page {
            number: Some(page_number),
            text,
        });
    }
    if failed_pages.len() == pages.len() {
        let (first_page, first_error) = &failed_pages[0];
        return Err(ExtractError::Corrupt {
            detail: format!("no PDF page could be read; page {first_page}: {first_error}"),
        });
    }
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
