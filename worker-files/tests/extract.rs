use std::path::{Path, PathBuf};
use std::time::Instant;

use testkit::fixtures;
use worker_files::extract::{
    DocumentKind, ExtractError, ExtractLimits, ExtractedDocument, detect_kind, extract_isolated,
    extract_path, normalize_text,
};

fn child_program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_worker-files"))
}

/// The worker binary acts as the extractor when its first argument says so.
fn child_args() -> Vec<String> {
    vec![worker_files::EXTRACT_CHILD_ARG.to_string()]
}

fn write_temp(bytes: &[u8], suffix: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(suffix)
        .tempfile()
        .expect("temp file");
    std::io::Write::write_all(&mut file, bytes).expect("write temp file");
    file
}

async fn isolated(
    bytes: &[u8],
    kind: DocumentKind,
    limits: &ExtractLimits,
) -> Result<ExtractedDocument, ExtractError> {
    let file = write_temp(bytes, ".bin");
    extract_isolated(&child_program(), &child_args(), file.path(), kind, limits).await
}

fn detect(
    bytes: &[u8],
    content_type: Option<&str>,
    name: Option<&str>,
) -> Result<DocumentKind, ExtractError> {
    let file = write_temp(bytes, ".bin");
    detect_kind(file.path(), content_type, name)
}

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn pdftotext(path: &Path) -> Option<String> {
    let output = std::process::Command::new("pdftotext")
        .arg(path)
        .arg("-")
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

const LONG_PARAGRAPH: &str = "GlassBox Fleet turns uploaded files into searchable knowledge. It downloads the file, \
extracts the text, splits it into chunks, embeds them in batches and stores chunks and vectors in Postgres.";

#[tokio::test]
async fn pdf_round_trips_pages_in_process_isolated_and_pdftotext() {
    let pages = [
        "First page title\n\nHello from page one. Café, naïve – “quoted”.",
        LONG_PARAGRAPH,
        "Third and last page",
    ];
    let bytes = fixtures::pdf_from_pages(&pages);
    let file = write_temp(&bytes, ".pdf");
    assert_eq!(
        detect_kind(file.path(), Some("application/octet-stream"), Some("x.txt")).unwrap(),
        DocumentKind::Pdf
    );

    let limits = ExtractLimits::default();
    let in_process = extract_path(file.path(), DocumentKind::Pdf, &limits).unwrap();
    let isolated = extract_isolated(
        &child_program(),
        &child_args(),
        file.path(),
        DocumentKind::Pdf,
        &limits,
    )
    .await
    .unwrap();
    assert_eq!(in_process, isolated);
    assert_eq!(isolated.kind, DocumentKind::Pdf);
    assert_eq!(isolated.pages.len(), 3);
    for (index, (page, expected)) in isolated.pages.iter().zip(pages).enumerate() {
        assert_eq!(page.number, Some(index as u32 + 1));
        assert_eq!(squash(&page.text), squash(expected), "page {}", index + 1);
    }
    assert!(
        isolated.pages[0].text.contains("First page title\n\nHello"),
        "{:?}",
        isolated.pages[0].text
    );

    if let Some(poppler_text) = pdftotext(file.path()) {
        let poppler_pages: Vec<&str> = poppler_text.split('\u{c}').collect();
        for (index, expected) in pages.iter().enumerate() {
            assert_eq!(
                squash(poppler_pages[index]),
                squash(expected),
                "pdftotext page {}",
                index + 1
            );
        }
    }
}

#[tokio::test]
async fn pdf_page_limit_is_too_large() {
    let bytes = fixtures::pdf_from_pages(&["one", "two", "three"]);
    let limits = ExtractLimits {
        max_pages: 2,
        ..ExtractLimits::default()
    };
    let error = isolated(&bytes, DocumentKind::Pdf, &limits)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "too_large");
    assert_eq!(
        error.to_string(),
        "document too large: PDF has 3 pages, limit 2"
    );
}

#[tokio::test]
async fn pdf_without_text_is_empty_text() {
    let bytes = fixtures::pdf_from_pages(&["", ""]);
    let error = isolated(&bytes, DocumentKind::Pdf, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "empty_text");
    assert!(
        error.to_string().contains("scanned PDF? no text layer"),
        "{error}"
    );
}

#[tokio::test]
async fn truncated_pdf_is_corrupt() {
    let bytes = fixtures::truncated_pdf();
    assert_eq!(detect(&bytes, None, None).unwrap(), DocumentKind::Pdf);
    let error = isolated(&bytes, DocumentKind::Pdf, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "corrupt", "{error}");
}

#[tokio::test]
async fn password_protected_pdfs_are_encrypted() {
    let bytes = fixtures::encrypted_pdf();
    assert_eq!(detect(&bytes, None, None).unwrap(), DocumentKind::Pdf);
    let error = isolated(&bytes, DocumentKind::Pdf, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "encrypted", "{error}");
}

#[tokio::test]
async fn pdfs_encrypted_with_an_empty_user_password_are_extracted_like_any_viewer_would() {
    let bytes = fixtures::encrypted_pdf_empty_user_password();
    let document = isolated(&bytes, DocumentKind::Pdf, &ExtractLimits::default())
        .await
        .unwrap();
    assert!(
        squash(&document.pages[0].text).contains("quarterly numbers are encrypted"),
        "{:?}",
        document.pages
    );
}

#[test]
fn encrypted_pdf_is_really_encrypted() {
    let bytes = fixtures::encrypted_pdf();
    let mut document = lopdf::Document::load_mem(&bytes).unwrap();
    assert!(document.is_encrypted());
    assert!(document.decrypt("wrong").is_err());
    document.decrypt("glassbox-user").unwrap();
    let text =
        squash(&pdf_extract::extract_text_from_mem(&fixtures::pdf_from_pages(&["x"])).unwrap());
    assert_eq!(text, "x");
}

#[tokio::test]
async fn random_bytes_are_unsupported() {
    let bytes = fixtures::random_bytes(64 * 1024, 7);
    let error = detect(&bytes, Some("text/plain"), Some("notes.txt")).unwrap_err();
    assert_eq!(error.code(), "unsupported_type", "{error}");
    // Even when forced through the PDF path, random bytes never take the worker down.
    let error = isolated(&bytes, DocumentKind::Pdf, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "corrupt", "{error}");
}

#[test]
fn empty_file_is_empty_text() {
    assert_eq!(detect(b"", None, None).unwrap_err().code(), "empty_text");
}

#[tokio::test]
async fn zip_bomb_is_caught_before_inflating() {
    let started = Instant::now();
    let bytes = fixtures::zip_bomb();
    println!(
        "zip_bomb: {} bytes generated in {:?}",
        bytes.len(),
        started.elapsed()
    );
    assert!(bytes.len() < 4 * 1024 * 1024);
    assert_eq!(
        detect(&bytes, None, Some("report.docx")).unwrap(),
        DocumentKind::Docx
    );
    let error = isolated(&bytes, DocumentKind::Docx, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "zip_bomb");
    assert_eq!(
        error.to_string(),
        "zip bomb: zip entry word/document.xml declares 512 MiB uncompressed, limit 256 MiB"
    );

    // With a generous size limit the ratio check still fires.
    let limits = ExtractLimits {
        docx_max_uncompressed_bytes: 4 << 30,
        ..ExtractLimits::default()
    };
    let error = isolated(&bytes, DocumentKind::Docx, &limits)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "zip_bomb");
    assert!(error.to_string().contains("ratio"), "{error}");
}

#[tokio::test]
async fn zip_bomb_with_lying_headers_is_caught_while_inflating() {
    let started = Instant::now();
    let bytes = fixtures::zip_bomb_lying_sizes();
    println!(
        "zip_bomb_lying_sizes: {} bytes generated in {:?}",
        bytes.len(),
        started.elapsed()
    );
    let error = isolated(&bytes, DocumentKind::Docx, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "zip_bomb");
    assert_eq!(
        error.to_string(),
        "zip bomb: zip entry word/document.xml inflates beyond its declared size of 4 KiB"
    );
}

#[test]
fn zip_entry_count_limit() {
    let bytes = fixtures::docx_from_paragraphs(&["one"]);
    let file = write_temp(&bytes, ".docx");
    let limits = ExtractLimits {
        docx_max_entries: 3,
        ..ExtractLimits::default()
    };
    let error = extract_path(file.path(), DocumentKind::Docx, &limits).unwrap_err();
    assert_eq!(error.code(), "zip_bomb");
    assert!(error.to_string().contains("limit 3"), "{error}");
}

#[test]
fn zip_not_docx_is_unsupported() {
    let error = detect(&fixtures::zip_not_docx(), None, Some("report.docx")).unwrap_err();
    assert_eq!(error.code(), "unsupported_type");
    assert!(error.to_string().contains("word/document.xml"), "{error}");
}

#[tokio::test]
async fn docx_round_trips_paragraphs() {
    let paragraphs = [
        "Quarterly report",
        LONG_PARAGRAPH,
        "Ünïcödé and the ﬁnal line",
    ];
    let bytes = fixtures::docx_from_paragraphs(&paragraphs);
    assert_eq!(detect(&bytes, None, None).unwrap(), DocumentKind::Docx);
    let document = isolated(&bytes, DocumentKind::Docx, &ExtractLimits::default())
        .await
        .unwrap();
    assert_eq!(document.pages.len(), 1);
    assert_eq!(document.pages[0].number, None);
    assert_eq!(
        document.pages[0].text,
        format!("Quarterly report\n\n{LONG_PARAGRAPH}\n\nÜnïcödé and the final line")
    );
}

#[tokio::test]
async fn hostile_pdf_overflows_the_child_stack_not_ours() {
    let bytes = fixtures::hostile_pdf();
    println!("hostile_pdf: {} bytes", bytes.len());
    let started = Instant::now();
    let error = isolated(&bytes, DocumentKind::Pdf, &ExtractLimits::default())
        .await
        .unwrap_err();
    println!("hostile_pdf: {error} after {:?}", started.elapsed());
    assert_eq!(error.code(), "extract_crashed", "{error}");
    assert!(error.to_string().contains("stack overflow"), "{error}");
    // The parent is still fine and extracts the next document.
    let document = isolated(
        &fixtures::pdf_from_pages(&["still alive"]),
        DocumentKind::Pdf,
        &ExtractLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(document.pages[0].text, "still alive");
}

#[tokio::test]
async fn looping_pdf_hits_the_cpu_limit() {
    let bytes = fixtures::looping_pdf();
    let limits = ExtractLimits {
        child_cpu_seconds: 2,
        wall_timeout_secs: 30,
        ..ExtractLimits::default()
    };
    let started = Instant::now();
    let error = isolated(&bytes, DocumentKind::Pdf, &limits)
        .await
        .unwrap_err();
    println!("looping_pdf: {error} after {:?}", started.elapsed());
    assert_eq!(error.code(), "extract_timeout", "{error}");
    assert!(error.to_string().contains("CPU limit of 2 s"), "{error}");
}

#[tokio::test]
async fn signals_map_to_extract_crashed() {
    let script = write_temp(
        b"#!/bin/sh\necho 'something went wrong' >&2\nkill -SEGV $$\n",
        ".sh",
    );
    let error = extract_isolated(
        Path::new("/bin/sh"),
        &[script.path().display().to_string()],
        script.path(),
        DocumentKind::Text,
        &ExtractLimits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "extract_crashed", "{error}");
    assert_eq!(
        error.to_string(),
        "extraction crashed: extraction child died by signal 11: segmentation fault"
    );
}

#[tokio::test]
async fn panicking_pdf_is_extract_crashed_with_message() {
    let bytes = fixtures::panicking_pdf();
    let error = isolated(&bytes, DocumentKind::Pdf, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "extract_crashed", "{error}");
    assert!(error.to_string().contains("MediaBox"), "{error}");
    // In-process the panic is caught too.
    let file = write_temp(&bytes, ".pdf");
    let error =
        extract_path(file.path(), DocumentKind::Pdf, &ExtractLimits::default()).unwrap_err();
    assert_eq!(error.code(), "extract_crashed", "{error}");
}

#[tokio::test]
async fn wall_timeout_kills_the_child() {
    // A shell script that never answers stands in for a looping extractor.
    let script = write_temp(b"#!/bin/sh\nexec sleep 30\n", ".sh");
    let limits = ExtractLimits {
        wall_timeout_secs: 1,
        ..ExtractLimits::default()
    };
    let started = Instant::now();
    let error = extract_isolated(
        Path::new("/bin/sh"),
        &[script.path().display().to_string()],
        script.path(),
        DocumentKind::Text,
        &limits,
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "extract_timeout", "{error}");
    assert!(started.elapsed().as_secs() < 5);
}

#[tokio::test]
async fn cpu_limit_is_extract_timeout() {
    let script = write_temp(b"#!/bin/sh\nulimit -t 1\nwhile :; do :; done\n", ".sh");
    let limits = ExtractLimits {
        child_cpu_seconds: 1,
        wall_timeout_secs: 20,
        ..ExtractLimits::default()
    };
    let error = extract_isolated(
        Path::new("/bin/sh"),
        &[script.path().display().to_string()],
        script.path(),
        DocumentKind::Text,
        &limits,
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "extract_timeout", "{error}");
}

#[tokio::test]
async fn memory_limit_is_extract_crashed() {
    let started = Instant::now();
    let bytes = fixtures::pdf_flate_bomb();
    println!(
        "pdf_flate_bomb: {} bytes generated in {:?}",
        bytes.len(),
        started.elapsed()
    );
    let limits = ExtractLimits {
        // Room for the worker binary itself, not for 128 MiB of inflated content.
        child_memory_bytes: 100 * 1024 * 1024,
        ..ExtractLimits::default()
    };
    let error = isolated(&bytes, DocumentKind::Pdf, &limits)
        .await
        .unwrap_err();
    println!("pdf_flate_bomb: {error}");
    assert_eq!(error.code(), "extract_crashed", "{error}");
    assert!(error.to_string().contains("out of memory"), "{error}");
    // 8 MiB of address space is not even enough to start the extraction thread.
    let limits = ExtractLimits {
        child_memory_bytes: 8 * 1024 * 1024,
        ..ExtractLimits::default()
    };
    let error = isolated(
        &fixtures::pdf_from_pages(&["x"]),
        DocumentKind::Pdf,
        &limits,
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "extract_crashed", "{error}");
}

#[tokio::test]
async fn large_texts_travel_through_the_pipe() {
    let paragraph = format!("{LONG_PARAGRAPH}\n\n");
    let text = paragraph.repeat(40_000); // about 8 MiB
    let document = isolated(
        text.as_bytes(),
        DocumentKind::Text,
        &ExtractLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(document.pages[0].text, text.trim_end());

    let limits = ExtractLimits {
        max_text_bytes: 1024 * 1024,
        ..ExtractLimits::default()
    };
    let error = isolated(text.as_bytes(), DocumentKind::Text, &limits)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "too_large");
}

#[tokio::test]
async fn html_drops_script_and_style() {
    let html = b"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style></head>\
<body><h1>Heading</h1><script>alert('x')</script><p>First <a href=\"https://example.com\">link</a> paragraph.</p>\
<table><tr><td>cell one</td><td>cell two</td></tr></table></body></html>";
    assert_eq!(detect(html, None, None).unwrap(), DocumentKind::Html);
    let document = isolated(html, DocumentKind::Html, &ExtractLimits::default())
        .await
        .unwrap();
    let text = &document.pages[0].text;
    println!("html text: {text:?}");
    assert!(
        text.contains("Heading")
            && text.contains("First link paragraph.")
            && text.contains("cell two"),
        "{text}"
    );
    assert!(!text.contains("alert") && !text.contains("color"), "{text}");
}

#[test]
fn text_kinds_use_hints_then_content() {
    let markdown = b"# Title\n\nSome *text* with a [link](https://example.com).\n";
    assert_eq!(
        detect(markdown, None, None).unwrap(),
        DocumentKind::Markdown
    );
    assert_eq!(
        detect(markdown, Some("text/plain; charset=utf-8"), None).unwrap(),
        DocumentKind::Text
    );
    assert_eq!(
        detect(b"plain words only\n", None, None).unwrap(),
        DocumentKind::Text
    );
    assert_eq!(
        detect(b"plain words only\n", None, Some("README.md")).unwrap(),
        DocumentKind::Markdown
    );
    assert_eq!(
        detect(b"<p>x</p>", Some("text/html"), None).unwrap(),
        DocumentKind::Html
    );
    // Hints never turn binary into text.
    assert_eq!(
        detect(b"\x89PNG\r\n\x1a\n....", Some("text/plain"), Some("a.txt"))
            .unwrap_err()
            .code(),
        "unsupported_type"
    );
}

#[test]
fn latin1_text_is_decoded() {
    let file = write_temp(b"Caf\xe9 cr\xe8me br\xfbl\xe9e \x80 5", ".txt");
    let document =
        extract_path(file.path(), DocumentKind::Text, &ExtractLimits::default()).unwrap();
    assert_eq!(document.pages[0].text, "Café crème brûlée € 5");
}

#[test]
fn normalize_handles_ligatures_hyphens_controls_and_whitespace() {
    let raw = "  The \u{FB01}rst \u{FB02}oor, an o\u{FB03}ce\u{0000} and a sta\u{FB06}\r\nexam-\r\nple of hy-\n  phen\u{00AD}ation,\ttabs   and\u{00A0}spaces\u{0007}.\r\n\r\n\r\n\n Next paragraph\u{000C}Page two\n2-\nthree  ";
    assert_eq!(
        normalize_text(raw),
        "The first floor, an office and a stast\nexample of hyphenation, tabs and spaces.\n\nNext paragraph\n\nPage two\n2-\nthree"
    );
    assert_eq!(normalize_text("\u{0}\u{1}\n \t\n"), "");
}

#[test]
fn errors_serialize_with_their_code() {
    let error = ExtractError::ZipBomb {
        detail: "zip has 9 entries, limit 3".to_owned(),
    };
    let json = serde_json::to_string(&error).unwrap();
    assert_eq!(
        json,
        r#"{"code":"zip_bomb","detail":"zip has 9 entries, limit 3"}"#
    );
    assert_eq!(serde_json::from_str::<ExtractError>(&json).unwrap(), error);
    let limits: ExtractLimits = serde_json::from_str(r#"{"max_pages": 5}"#).unwrap();
    assert_eq!(limits.max_pages, 5);
    assert_eq!(
        limits.docx_max_entries,
        ExtractLimits::default().docx_max_entries
    );
}

#[test]
fn docx_tables_hyperlinks_and_breaks_are_walked() {
    use docx_rs::{Docx, Hyperlink, HyperlinkType, Paragraph, Run, Table, TableCell, TableRow};
    let cell = |text: &str| {
        TableCell::new().add_paragraph(Paragraph::new().add_run(Run::new().add_text(text)))
    };
    let docx = Docx::new()
        .add_paragraph(
            Paragraph::new()
                .add_run(Run::new().add_text("See "))
                .add_hyperlink(
                    Hyperlink::new("https://example.com", HyperlinkType::External)
                        .add_run(Run::new().add_text("the docs")),
                )
                .add_run(
                    Run::new()
                        .add_text(" now.")
                        .add_break(docx_rs::BreakType::TextWrapping)
                        .add_text("Next line"),
                ),
        )
        .add_table(Table::new(vec![
            TableRow::new(vec![cell("Name"), cell("Value")]),
            TableRow::new(vec![cell("alpha"), cell("1")]),
        ]))
        .add_paragraph(Paragraph::new().add_run(Run::new().add_text("After the table")));
    let mut cursor = std::io::Cursor::new(Vec::new());
    docx.build().pack(&mut cursor).unwrap();
    let file = write_temp(&cursor.into_inner(), ".docx");
    let document =
        extract_path(file.path(), DocumentKind::Docx, &ExtractLimits::default()).unwrap();
    assert_eq!(
        document.pages[0].text,
        "See the docs now.\nNext line\n\nName | Value\nalpha | 1\n\nAfter the table"
    );
}
