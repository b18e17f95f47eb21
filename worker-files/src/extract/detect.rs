use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{DocumentKind, ExtractError};

/// How much of the file the sniffer looks at.
const SNIFF_BYTES: usize = 8 * 1024;
/// PDF readers accept junk before the header; so do we, within this window.
const PDF_HEADER_WINDOW: usize = 1024;
/// Legacy Office (OLE compound file) inputs are scanned this far for the marker of an encrypted package.
const OLE_SCAN_LIMIT: u64 = 32 * 1024 * 1024;

/// Detects the document kind from the content (magic bytes), not from the name.
///
/// - `%PDF-` within the first KiB: PDF.
/// - ZIP: a DOCX, PPTX, XLSX or EPUB by the entry it cannot do without (`word/document.xml`,
///   `ppt/presentation.xml`, `xl/workbook.xml`, `META-INF/container.xml`), otherwise `unsupported_type`.
/// - OLE compound file: `encrypted` when it is a password-protected Office package, otherwise
///   `unsupported_type` (legacy .doc/.xls).
/// - Text with a UTF-8, UTF-16 or UTF-32 byte order mark: decoded before it is judged.
/// - PNG, JPEG, TIFF: an image, read by OCR.
/// - Other binary content (NUL bytes, many control characters, known archive magics, GIF):
///   `unsupported_type`. An empty file: `empty_text`.
/// - Text: the declared content type, then the file extension, break the tie between HTML, Markdown and
///   plain text; without a usable hint the content decides (HTML tags, then Markdown syntax).
pub fn detect_kind(
    path: &Path,
    declared_content_type: Option<&str>,
    name: Option<&str>,
) -> Result<DocumentKind, ExtractError> {
    let mut file = File::open(path)
        .map_err(|error| ExtractError::io("open file for type detection", &error))?;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut file)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|error| ExtractError::io("read file for type detection", &error))?;
    drop(file);

    if head.is_empty() {
        return Err(ExtractError::EmptyText {
            detail: "the file is empty (0 bytes)".to_owned(),
        });
    }
    let pdf_window = &head[..head.len().min(PDF_HEADER_WINDOW)];
    if contains(pdf_window, b"%PDF-") {
        return Ok(DocumentKind::Pdf);
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return detect_zip(path);
    }
    if head.starts_with(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Err(detect_ole(path));
    }
    if is_ocr_image(&head) {
        return Ok(DocumentKind::Image);
    }
    if let Some(format_name) = known_binary_format(&head) {
        return Err(ExtractError::UnsupportedType {
            detail: format!("content is {format_name}"),
        });
    }
    if super::text::bom_encoding(&head).is_some() {
        // UTF-16 and UTF-32 text is full of NUL bytes: decide on the decoded characters.
        let decoded = super::text::decode_text(&head);
        if looks_binary(decoded.as_bytes()) {
            return Err(ExtractError::UnsupportedType {
                detail: "content has a text byte order mark but decodes to binary data".to_owned(),
            });
        }
        if let Some(kind) = text_kind_from_hints(declared_content_type, name) {
            return Ok(kind);
        }
        return Ok(text_kind_from_content(decoded.as_bytes()));
    }
    if looks_binary(&head) {
        return Err(ExtractError::UnsupportedType {
            detail: "content is binary data of an unknown format".to_owned(),
        });
    }
    if let Some(kind) = text_kind_from_hints(declared_content_type, name) {
        return Ok(kind);
    }
    Ok(text_kind_from_content(&head))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn detect_zip(path: &Path) -> Result<DocumentKind, ExtractError> {
    let file = File::open(path)
        .map_err(|error| ExtractError::io("open zip for type detection", &error))?;
    let archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|error| {
        ExtractError::Corrupt {
            detail: format!("unreadable zip archive: {error}"),
        }
    })?;
    // The entry each format cannot do without; the first match wins.
    const MARKERS: [(&str, DocumentKind); 4] = [
        ("word/document.xml", DocumentKind::Docx),
        ("ppt/presentation.xml", DocumentKind::Pptx),
        ("xl/workbook.xml", DocumentKind::Xlsx),
        ("META-INF/container.xml", DocumentKind::Epub),
    ];
    for (marker, kind) in MARKERS {
        if archive.file_names().any(|entry_name| entry_name == marker) {
            return Ok(kind);
        }
    }
    Err(ExtractError::UnsupportedType {
        detail: "zip archive that is not a DOCX, PPTX, XLSX or EPUB (none of word/document.xml, \
                 ppt/presentation.xml, xl/workbook.xml, META-INF/container.xml)"
            .to_owned(),
    })
}

/// Office encrypts OOXML files by wrapping them in an OLE compound file with an "EncryptedPackage"
/// stream; the directory stores stream names in UTF-16LE.
fn detect_ole(path: &Path) -> ExtractError {
    let marker: Vec<u8> = "EncryptedPackage"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut content = Vec::new();
    let read_result =
        File::open(path).and_then(|file| file.take(OLE_SCAN_LIMIT).read_to_end(&mut content));
    if read_result.is_ok() && contains(&content, &marker) {
        return ExtractError::Encrypted {
            detail: "password-protected Office document (encrypted OLE package)".to_owned(),
        };
    }
    ExtractError::UnsupportedType {
        detail: "legacy Office (OLE compound) document, only .docx is supported".to_owned(),
    }
}

/// PNG, JPEG and TIFF (either byte order): images OCR reads.
fn is_ocr_image(head: &[u8]) -> bool {
    const MAGICS: [&[u8]; 4] = [
        b"\x89PNG\r\n\x1a\n",
        b"\xFF\xD8\xFF",
        b"II*\x00",
        b"MM\x00*",
    ];
    MAGICS.iter().any(|magic| head.starts_with(magic))
}

fn known_binary_format(head: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&[u8], &str); 8] = [
        (b"GIF87a", "a GIF image"),
        (b"GIF89a", "a GIF image"),
        (b"\x1F\x8B", "gzip data"),
        (b"BZh", "bzip2 data"),
        (b"\xFD7zXZ\x00", "xz data"),
        (b"7z\xBC\xAF\x27\x1C", "a 7-Zip archive"),
        (b"Rar!\x1A\x07", "a RAR archive"),
        (b"\x7FELF", "an ELF executable"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, format_name)| *format_name)
}

/// Text has no NUL bytes and few control characters. Bytes >= 0x80 are fine: UTF-8 or a legacy
/// single-byte encoding.
fn looks_binary(head: &[u8]) -> bool {
    if head.contains(&0) {
        return true;
    }
    let control_count = head
        .iter()
        .filter(|&&byte| {
            (byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r' | 0x0C | 0x1B)) || byte == 0x7F
        })
        .count();
    control_count * 20 > head.len()
}

fn text_kind_from_hints(
    declared_content_type: Option<&str>,
    name: Option<&str>,
) -> Option<DocumentKind> {
    let content_type_kind = declared_content_type.and_then(|content_type| {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "text/html" | "application/xhtml+xml" => Some(DocumentKind::Html),
            "text/markdown" | "text/x-markdown" => Some(DocumentKind::Markdown),
            "text/plain" => Some(DocumentKind::Text),
            "text/csv" | "application/csv" | "text/tab-separated-values" => Some(DocumentKind::Csv),
            _ => None,
        }
    });
    if let Some(kind) = content_type_kind {
        return Some(kind);
    }
    let extension = Path::new(name?).extension()?.to_str()?.to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" | "xhtml" => Some(DocumentKind::Html),
        "md" | "markdown" | "mdown" | "mkd" => Some(DocumentKind::Markdown),
        "txt" | "text" | "log" => Some(DocumentKind::Text),
        "csv" | "tsv" => Some(DocumentKind::Csv),
        _ => None,
    }
}

fn text_kind_from_content(head: &[u8]) -> DocumentKind {
    let sample = String::from_utf8_lossy(head).to_ascii_lowercase();
    let trimmed = sample.trim_start_matches('\u{FEFF}').trim_start();
    let html_markers = [
        "<!doctype html",
        "<html",
        "<head",
        "<body",
        "<p>",
        "<div",
        "<table",
        "<h1",
    ];
    if trimmed.starts_with("<!doctype html") || trimmed.starts_with("<html") {
        return DocumentKind::Html;
    }
    let html_marker_count = html_markers
        .iter()
        .filter(|marker| sample.contains(*marker))
        .count();
    if html_marker_count >= 2 {
        return DocumentKind::Html;
    }
    let markdown_line_count = sample
        .lines()
        .filter(|line| {
            line.starts_with("# ")
                || line.starts_with("## ")
                || line.starts_with("### ")
                || line.starts_with("```")
                || line.starts_with("- [")
                || line.starts_with("> ")
        })
        .count();
    if markdown_line_count > 0 || (sample.contains("](") && sample.contains('[')) {
        return DocumentKind::Markdown;
    }
    DocumentKind::Text
}
