//! Extraction through the real confined child (and in process where a test compares the two), with
//! both PDF engines, every document format and every hostile fixture.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use testkit::fixtures;
use testkit::processes::children_of;
use worker_files::extract::sandbox::{
    ChildRequest, ChunkingRequest, Extraction, Launch, ProbeReport,
};
use worker_files::extract::{
    DocumentKind, ExtractError, ExtractLimits, ExtractedDocument, PdfEngine, Sandbox, TextPart,
    detect_kind, extract_path, normalize_text,
};

fn child_program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_worker-files"))
}

fn pdfium() -> PdfEngine {
    PdfEngine::Pdfium {
        library: testkit::pdfium_library(),
    }
}

/// One scratch root shared by every test process (each child gets its own folder under it,
/// removed when it ends). A fixed folder, not a `TempDir` in a static: statics are never
/// dropped, and nextest runs each test in its own process, so that left one folder per test.
fn scratch_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::temp_dir().join("glassbox-extract-tests");
        std::fs::create_dir_all(&root).expect("scratch root");
        root
    })
    .clone()
}

/// The worker binary as the confined extractor, as the worker starts it.
fn sandbox() -> Sandbox {
    Sandbox::new(
        child_program(),
        vec![worker_files::EXTRACT_CHILD_ARG.to_string()],
        scratch_root(),
    )
    .expect("some network confinement works here")
}

/// Any program through the same confinement (shell scripts standing in for misbehaving extractors).
fn script_sandbox(script: &Path) -> Sandbox {
    Sandbox {
        program: PathBuf::from("/bin/sh"),
        program_args: vec![script.display().to_string()],
        network: sandbox().network,
        scratch_root: scratch_root(),
        launch: Launch::Exec,
    }
}

fn write_temp(bytes: &[u8], suffix: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(suffix)
        .tempfile()
        .expect("temp file");
    std::io::Write::write_all(&mut file, bytes).expect("write temp file");
    file
}

fn request(
    path: &Path,
    kind: Option<DocumentKind>,
    engine: PdfEngine,
    limits: &ExtractLimits,
) -> ChildRequest {
    ChildRequest {
        path: path.to_path_buf(),
        kind,
        content_type: None,
        name: None,
        pdf_engine: engine,
        limits: limits.clone(),
        chunking: None,
        include_texts: true,
    }
}

async fn isolated_with(
    bytes: &[u8],
    kind: DocumentKind,
    engine: PdfEngine,
    limits: &ExtractLimits,
) -> Result<ExtractedDocument, ExtractError> {
    let file = write_temp(bytes, ".bin");
    sandbox()
        .run(&request(file.path(), Some(kind), engine, limits))
        .await
        .map(|extraction| extraction.document)
}

/// Through the child with pdfium, the default engine.
async fn isolated(
    bytes: &[u8],
    kind: DocumentKind,
    limits: &ExtractLimits,
) -> Result<ExtractedDocument, ExtractError> {
    isolated_with(bytes, kind, pdfium(), limits).await
}

/// Through the child with detection, as the worker does, and chunking with the model's tokenizer.
async fn detected_and_chunked(
    bytes: &[u8],
    content_type: Option<&str>,
    name: Option<&str>,
) -> Result<Extraction, ExtractError> {
    let file = write_temp(bytes, ".upload");
    let mut child_request = request(file.path(), None, pdfium(), &ExtractLimits::default());
    child_request.content_type = content_type.map(str::to_owned);
    child_request.name = name.map(str::to_owned);
    child_request.chunking = Some(ChunkingRequest {
        tokenizer: testkit::model_dir().join("tokenizer.json"),
        max_tokens: 200,
        overlap_tokens: 20,
    });
    sandbox().run(&child_request).await
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
async fn pdf_round_trips_pages_with_both_engines_in_process_isolated_and_pdftotext() {
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
    for (engine, name) in [(pdfium(), "pdfium"), (PdfEngine::PdfExtract, "pdf-extract")] {
        let in_process = extract_path(file.path(), DocumentKind::Pdf, &engine, &limits).unwrap();
        let isolated = sandbox()
            .run(&request(
                file.path(),
                Some(DocumentKind::Pdf),
                engine.clone(),
                &limits,
            ))
            .await
            .unwrap()
            .document;
        assert_eq!(in_process, isolated, "{name}");
        assert_eq!(isolated.kind, DocumentKind::Pdf);
        assert_eq!(isolated.engine, name);
        assert_eq!(isolated.pages.len(), 3);
        for (index, (page, expected)) in isolated.pages.iter().zip(pages).enumerate() {
            assert_eq!(page.number, Some(index as u32 + 1));
            assert_eq!(
                squash(&page.text),
                squash(expected),
                "{name} page {}",
                index + 1
            );
        }
        assert!(
            isolated.pages[0].text.contains("First page title\n\nHello"),
            "{name}: {:?}",
            isolated.pages[0].text
        );
    }

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
async fn pdf_page_limit_is_too_large_with_both_engines() {
    let bytes = fixtures::pdf_from_pages(&["one", "two", "three"]);
    let limits = ExtractLimits {
        max_pages: 2,
        ..ExtractLimits::default()
    };
    for engine in [pdfium(), PdfEngine::PdfExtract] {
        let error = isolated_with(&bytes, DocumentKind::Pdf, engine, &limits)
            .await
            .unwrap_err();
        assert_eq!(error.code(), "too_large");
        assert_eq!(
            error.to_string(),
            "document too large: PDF has 3 pages, limit 2"
        );
    }
}

#[tokio::test]
async fn pdf_without_text_is_empty_text() {
    let bytes = fixtures::pdf_from_pages(&["", ""]);
    for engine in [pdfium(), PdfEngine::PdfExtract] {
        let error = isolated_with(&bytes, DocumentKind::Pdf, engine, &ExtractLimits::default())
            .await
            .unwrap_err();
        assert_eq!(error.code(), "empty_text");
        assert!(
            error.to_string().contains("scanned PDF? no text layer"),
            "{error}"
        );
    }
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
    let error = extract_path(
        file.path(),
        DocumentKind::Docx,
        &PdfEngine::PdfExtract,
        &limits,
    )
    .unwrap_err();
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
    assert_eq!(document.engine, "docx");
    assert_eq!(document.pages.len(), 1);
    assert_eq!(document.pages[0].number, None);
    assert_eq!(document.pages[0].part, Some(TextPart::Body));
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
    let error = isolated_with(
        &bytes,
        DocumentKind::Pdf,
        PdfEngine::PdfExtract,
        &ExtractLimits::default(),
    )
    .await
    .unwrap_err();
    println!("hostile_pdf: {error} after {:?}", started.elapsed());
    assert_eq!(error.code(), "extract_crashed", "{error}");
    assert!(error.to_string().contains("stack overflow"), "{error}");
    // pdfium bounds its parser's recursion: a typed outcome, never a crash.
    let pdfium_outcome = isolated(&bytes, DocumentKind::Pdf, &ExtractLimits::default()).await;
    println!("hostile_pdf with pdfium: {pdfium_outcome:?}");
    if let Err(error) = &pdfium_outcome {
        assert!(["empty_text", "corrupt"].contains(&error.code()), "{error}");
    }
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
    let error = isolated_with(&bytes, DocumentKind::Pdf, PdfEngine::PdfExtract, &limits)
        .await
        .unwrap_err();
    println!("looping_pdf: {error} after {:?}", started.elapsed());
    assert_eq!(error.code(), "extract_timeout", "{error}");
    assert!(error.to_string().contains("CPU limit of 2 s"), "{error}");
    // pdfium detects the cycle in the page tree and answers within the limit.
    let started = Instant::now();
    let pdfium_outcome = isolated(&bytes, DocumentKind::Pdf, &limits).await;
    println!(
        "looping_pdf with pdfium: {pdfium_outcome:?} after {:?}",
        started.elapsed()
    );
    if let Err(error) = &pdfium_outcome {
        assert_ne!(error.code(), "extract_timeout", "{error}");
    }
}

#[tokio::test]
async fn signals_map_to_extract_crashed() {
    let script = write_temp(
        b"#!/bin/sh\necho 'something went wrong' >&2\nkill -SEGV $$\n",
        ".sh",
    );
    let error = script_sandbox(script.path())
        .run(&request(
            script.path(),
            Some(DocumentKind::Text),
            pdfium(),
            &ExtractLimits::default(),
        ))
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
    let error = isolated_with(
        &bytes,
        DocumentKind::Pdf,
        PdfEngine::PdfExtract,
        &ExtractLimits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "extract_crashed", "{error}");
    assert!(error.to_string().contains("MediaBox"), "{error}");
    // In-process the panic is caught too.
    let file = write_temp(&bytes, ".pdf");
    let error = extract_path(
        file.path(),
        DocumentKind::Pdf,
        &PdfEngine::PdfExtract,
        &ExtractLimits::default(),
    )
    .unwrap_err();
    assert_eq!(error.code(), "extract_crashed", "{error}");
}

#[tokio::test]
async fn the_pdf_pdf_extract_panics_on_is_read_by_pdfium() {
    let document = isolated(
        &fixtures::panicking_pdf(),
        DocumentKind::Pdf,
        &ExtractLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(document.engine, "pdfium");
    assert_eq!(squash(&document.pages[0].text), "No media box here.");
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
    let error = script_sandbox(script.path())
        .run(&request(
            script.path(),
            Some(DocumentKind::Text),
            pdfium(),
            &limits,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "extract_timeout", "{error}");
    assert!(started.elapsed().as_secs() < 5);
}

// ---- The extraction server: a child forked per file ----

/// This test process's extraction server (it has one per `Sandbox` in use; the tests below use one).
fn extraction_server() -> Option<u32> {
    children_of(std::process::id()).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            cmdline
                .split(|byte| *byte == 0)
                .any(|arg| arg == b"--server")
        })
    })
}

/// Waits up to 10 s for `condition`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A one-page PDF of `text` through `sandbox` with pdfium: the page's text.
async fn page_text_through(sandbox: &Sandbox, text: &str) -> String {
    let file = write_temp(&fixtures::pdf_from_pages(&[text]), ".pdf");
    let extraction = sandbox
        .run(&request(
            file.path(),
            Some(DocumentKind::Pdf),
            pdfium(),
            &ExtractLimits::default(),
        ))
        .await
        .unwrap();
    extraction.document.pages[0].text.clone()
}

#[tokio::test]
async fn one_server_forks_a_child_per_file_and_outlives_a_crashing_one() {
    let sandbox = sandbox();
    assert_eq!(
        page_text_through(&sandbox, "first file").await,
        "first file"
    );
    let server = extraction_server().expect("the sandbox started an extraction server");
    eventually("the first file's child has exited", || {
        children_of(server).is_empty()
    })
    .await;

    // A child that overflows its stack dies alone: the server and the next file are unharmed.
    let hostile = write_temp(&fixtures::hostile_pdf(), ".pdf");
    let error = sandbox
        .run(&request(
            hostile.path(),
            Some(DocumentKind::Pdf),
            PdfEngine::PdfExtract,
            &ExtractLimits::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "extract_crashed", "{error}");
    assert!(error.to_string().contains("stack overflow"), "{error}");
    assert_eq!(
        page_text_through(&sandbox, "second file").await,
        "second file"
    );
    assert_eq!(
        extraction_server(),
        Some(server),
        "the same server served all three files"
    );

    // Files at once each get their own child.
    let texts = futures::future::join_all(
        ["file 0", "file 1", "file 2"].map(|text| page_text_through(&sandbox, text)),
    )
    .await;
    assert_eq!(texts, ["file 0", "file 1", "file 2"]);
}

#[tokio::test]
async fn an_abandoned_file_s_child_is_killed_and_a_dead_server_is_replaced() {
    let sandbox = sandbox();
    // pdf-extract loops on this file until its CPU limit: a child that keeps running.
    let looping = write_temp(&fixtures::looping_pdf(), ".pdf");
    let looping_request = request(
        looping.path(),
        Some(DocumentKind::Pdf),
        PdfEngine::PdfExtract,
        &ExtractLimits::default(),
    );

    // 1. The file is abandoned (a cancel, a shutdown): its child is killed.
    let run = tokio::spawn({
        let sandbox = sandbox.clone();
        let looping_request = looping_request.clone();
        async move { sandbox.run(&looping_request).await }
    });
    let mut server = None;
    eventually("the looping child runs", || {
        server = extraction_server();
        server.is_some_and(|server| !children_of(server).is_empty())
    })
    .await;
    let server = server.unwrap();
    let child = children_of(server)[0];
    run.abort();
    eventually("the abandoned child is gone", || {
        !std::path::Path::new(&format!("/proc/{child}")).exists()
    })
    .await;

    // 2. The server dies while a file runs: that file fails as a transient i/o error (retried),
    //    its child dies with the server, and the next file starts a new server.
    let run = tokio::spawn({
        let sandbox = sandbox.clone();
        async move { sandbox.run(&looping_request).await }
    });
    eventually("the second looping child runs", || {
        !children_of(server).is_empty()
    })
    .await;
    let child = children_of(server)[0];
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &server.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let error = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .expect("the file does not wait for a dead server")
        .unwrap()
        .unwrap_err();
    assert_eq!(error.code(), "io_error", "{error}");
    assert!(!error.is_permanent(), "{error}");
    eventually("the orphaned child is gone", || {
        !std::path::Path::new(&format!("/proc/{child}")).exists()
    })
    .await;
    assert_eq!(
        page_text_through(&sandbox, "after the restart").await,
        "after the restart"
    );
    let new_server = extraction_server().expect("a new server");
    assert_ne!(new_server, server);
}

#[test]
fn the_server_fails_a_command_it_cannot_read_and_exits_when_the_worker_hangs_up() {
    use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    // An answer that never comes fails the test instead of hanging it.
    rustix::net::sockopt::set_socket_timeout(
        &ours,
        rustix::net::sockopt::Timeout::Recv,
        Some(std::time::Duration::from_secs(10)),
    )
    .unwrap();
    let folder = tempfile::tempdir().unwrap();
    let mut server = std::process::Command::new(child_program())
        .args([worker_files::EXTRACT_CHILD_ARG, "--server"])
        .stdin(std::process::Stdio::from(theirs))
        .current_dir(folder.path())
        .spawn()
        .unwrap();
    let receive = |socket: &std::os::fd::OwnedFd| {
        let mut buffer = vec![0_u8; 4096];
        let (length, _) = rustix::net::recv(socket, &mut buffer[..], RecvFlags::empty()).unwrap();
        serde_json::from_slice::<serde_json::Value>(&buffer[..length]).unwrap()
    };
    // A start command from another build: its file fails at once, not at the wall clock.
    rustix::net::send(
        &ours,
        br#"{"command":"start","id":7,"scratch":"/","job":{"unknown":{}}}"#,
        SendFlags::NOSIGNAL,
    )
    .unwrap();
    let event = receive(&ours);
    assert_eq!(event["event"], "failed", "{event}");
    assert_eq!(event["id"], 7, "{event}");
    // A start command without its two pipes fails the same way.
    rustix::net::send(
        &ours,
        br#"{"command":"start","id":8,"scratch":"/","job":{"probe":{"connect_to":"127.0.0.1:1","limits":null}}}"#,
        SendFlags::NOSIGNAL,
    )
    .unwrap();
    let event = receive(&ours);
    assert_eq!(event["event"], "failed", "{event}");
    assert_eq!(event["id"], 8, "{event}");
    // Killing a child it does not know is a no-op; hanging up ends the server cleanly.
    rustix::net::send(&ours, br#"{"command":"kill","id":99}"#, SendFlags::NOSIGNAL).unwrap();
    drop(ours);
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the server outlived its worker's socket"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn cpu_limit_is_extract_timeout() {
    // No `ulimit` in the script: the sandbox sets the CPU limit before exec.
    let script = write_temp(b"#!/bin/sh\nwhile :; do :; done\n", ".sh");
    let limits = ExtractLimits {
        child_cpu_seconds: 1,
        wall_timeout_secs: 20,
        ..ExtractLimits::default()
    };
    let error = script_sandbox(script.path())
        .run(&request(
            script.path(),
            Some(DocumentKind::Text),
            pdfium(),
            &limits,
        ))
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
    let error = isolated_with(&bytes, DocumentKind::Pdf, PdfEngine::PdfExtract, &limits)
        .await
        .unwrap_err();
    println!("pdf_flate_bomb: {error}");
    assert_eq!(error.code(), "extract_crashed", "{error}");
    assert!(error.to_string().contains("out of memory"), "{error}");
    // pdfium under the same limit: it fails (typed), and never takes more than the limit.
    let pdfium_outcome = isolated(&bytes, DocumentKind::Pdf, &limits).await;
    println!("pdf_flate_bomb with pdfium: {pdfium_outcome:?}");
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
        detect(
            b"GIF89a\x01\x00\x01\x00....",
            Some("text/plain"),
            Some("a.txt")
        )
        .unwrap_err()
        .code(),
        "unsupported_type"
    );
}

#[test]
fn latin1_text_is_decoded() {
    let file = write_temp(b"Caf\xe9 cr\xe8me br\xfbl\xe9e \x80 5", ".txt");
    let document = extract_path(
        file.path(),
        DocumentKind::Text,
        &PdfEngine::PdfExtract,
        &ExtractLimits::default(),
    )
    .unwrap();
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
    let document = extract_path(
        file.path(),
        DocumentKind::Docx,
        &PdfEngine::PdfExtract,
        &ExtractLimits::default(),
    )
    .unwrap();
    let labelled: Vec<(Option<TextPart>, &str)> = document
        .pages
        .iter()
        .map(|page| (page.part, page.text.as_str()))
        .collect();
    assert_eq!(
        labelled,
        [
            (Some(TextPart::Body), "See the docs now.\nNext line"),
            (Some(TextPart::Table), "Name | Value\nalpha | 1"),
            (Some(TextPart::Body), "After the table"),
        ]
    );
}

#[tokio::test]
async fn minimal_docx_is_read_and_one_without_text_is_empty_text() {
    let bytes = fixtures::docx_minimal_paragraphs(&["Only three parts.", "Word opens it."]);
    assert_eq!(detect(&bytes, None, None).unwrap(), DocumentKind::Docx);
    let document = isolated(&bytes, DocumentKind::Docx, &ExtractLimits::default())
        .await
        .unwrap();
    assert_eq!(
        document.pages[0].text,
        "Only three parts.\n\nWord opens it."
    );

    let error = isolated(
        &fixtures::docx_image_only(),
        DocumentKind::Docx,
        &ExtractLimits::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.code(), "empty_text", "{error}");
    assert_eq!(error.to_string(), "no text: docx document contains no text");
}

#[tokio::test]
async fn every_docx_part_is_read_once_and_labelled() {
    let extraction = detected_and_chunked(&fixtures::docx_every_part(), None, Some("parts.docx"))
        .await
        .unwrap();
    let labelled: Vec<(TextPart, String)> = extraction
        .document
        .pages
        .iter()
        .map(|page| (page.part.unwrap_or(TextPart::Body), squash(&page.text)))
        .collect();
    assert_eq!(
        labelled,
        [
            (TextPart::Body, "BODY-TEXT".to_owned()),
            (TextPart::Table, "TABLE-CELL-A | TABLE-CELL-B".to_owned()),
            (TextPart::TextBox, "TEXT-BOX-TEXT".to_owned()),
            (TextPart::Body, "See note commented".to_owned()),
            (TextPart::Header, "HEADER-TEXT".to_owned()),
            (TextPart::Footer, "FOOTER-TEXT".to_owned()),
            (TextPart::Footnote, "FOOTNOTE-TEXT".to_owned()),
            (TextPart::Endnote, "ENDNOTE-TEXT".to_owned()),
            (TextPart::Comment, "COMMENT-TEXT".to_owned()),
        ]
    );
    // The chunks keep the label (body text has none), and the deleted text is nowhere.
    let text_box_chunk = extraction
        .chunks
        .iter()
        .find(|chunk| chunk.text.contains("TEXT-BOX-TEXT"))
        .unwrap();
    assert_eq!(text_box_chunk.part, Some(TextPart::TextBox));
    let footnote_chunk = extraction
        .chunks
        .iter()
        .find(|chunk| chunk.text.contains("FOOTNOTE-TEXT"))
        .unwrap();
    assert_eq!(footnote_chunk.part, Some(TextPart::Footnote));
    assert!(
        extraction
            .chunks
            .iter()
            .all(|chunk| !chunk.text.contains("DELETED-TEXT"))
    );
    assert_eq!(
        extraction
            .chunks
            .iter()
            .filter(|chunk| chunk.text.contains("TEXT-BOX-TEXT"))
            .count(),
        1,
        "the mc:Fallback copy of the text box is not read again"
    );
}

#[tokio::test]
async fn docx_entities_and_dtds_are_never_expanded() {
    let started = Instant::now();
    let document = isolated(
        &fixtures::docx_with_entities(),
        DocumentKind::Docx,
        &ExtractLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        document.pages[0].text,
        "Entities stay literal: &lol9; and &xxe; & é"
    );
    assert!(
        !document.pages[0].text.contains("root:"),
        "no local file was read"
    );
    assert!(started.elapsed().as_secs() < 10);
}

#[tokio::test]
async fn text_with_utf16_and_utf32_boms_is_decoded_and_invalid_utf8_replaced() {
    let text = "Grüße aus Köln: 世界.\nSecond line.";
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let mut utf16_big_endian = vec![0xFE, 0xFF];
    for unit in text.encode_utf16() {
        utf16_big_endian.extend_from_slice(&unit.to_be_bytes());
    }
    let mut utf32 = vec![0xFF, 0xFE, 0x00, 0x00];
    for character in text.chars() {
        utf32.extend_from_slice(&u32::from(character).to_le_bytes());
    }
    for (name, bytes) in [
        ("utf16le", utf16),
        ("utf16be", utf16_big_endian),
        ("utf32le", utf32),
    ] {
        let extraction = detected_and_chunked(&bytes, Some("text/plain"), Some("notes.txt"))
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        assert_eq!(extraction.document.kind, DocumentKind::Text, "{name}");
        assert_eq!(extraction.chunks[0].text, text, "{name}");
    }
    // Mostly UTF-8 with one broken sequence: replaced, not refused (and not read as Latin-1).
    let mut broken = "Valid text, then a broken byte: ".repeat(40).into_bytes();
    broken.extend_from_slice(b"\xC3(end)");
    let extraction = detected_and_chunked(&broken, None, Some("broken.txt"))
        .await
        .unwrap();
    let joined: String = extraction
        .chunks
        .iter()
        .map(|chunk| chunk.text.as_str())
        .collect();
    assert!(joined.contains("\u{FFFD}(end)"), "{joined}");
}

#[tokio::test]
async fn a_deeply_nested_html_file_is_read_in_linear_time() {
    let html = fixtures::deeply_nested_html(2 * 1024 * 1024);
    let started = Instant::now();
    let extraction = detected_and_chunked(&html, Some("text/html"), Some("deep.html"))
        .await
        .unwrap();
    println!("2 MB of nested divs: {:?}", started.elapsed());
    assert_eq!(extraction.document.kind, DocumentKind::Html);
    assert_eq!(
        extraction.chunks[0].text,
        "The text at the bottom of a very deep tree."
    );
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_long_line_is_chunked_in_the_child_with_offsets_into_the_text() {
    let line = fixtures::one_long_line(2 * 1024 * 1024);
    let started = Instant::now();
    let extraction = detected_and_chunked(&line, Some("text/plain"), Some("line.txt"))
        .await
        .unwrap();
    println!(
        "2 MB line: {} chunks in {:?} (child: extract {} ms, chunk {} ms)",
        extraction.chunks.len(),
        started.elapsed(),
        extraction.extract_ms,
        extraction.chunk_ms
    );
    let text = std::str::from_utf8(&line).unwrap().trim_end();
    assert_eq!(extraction.text_bytes, text.len() as u64);
    assert!(extraction.chunks.len() > 1000);
    for chunk in &extraction.chunks {
        assert!(chunk.token_count <= 200, "{}", chunk.token_count);
        assert_eq!(&text[chunk.byte_start..chunk.byte_end], chunk.text);
    }
    assert_eq!(extraction.chunks.last().unwrap().byte_end, text.len());
    // Without include_texts the page text stays in the child.
    let file = write_temp(&line, ".txt");
    let mut without_texts = request(file.path(), None, pdfium(), &ExtractLimits::default());
    without_texts.include_texts = false;
    let extraction = sandbox().run(&without_texts).await.unwrap();
    assert!(
        extraction
            .document
            .pages
            .iter()
            .all(|page| page.text.is_empty())
    );
    assert_eq!(extraction.text_bytes, text.len() as u64);
}

#[tokio::test]
async fn the_child_sees_no_secrets_no_network_and_its_limits_from_the_start() {
    // Secrets the worker holds: they are in this process's environment, and must not reach the child.
    let secrets = [
        (
            "GLASSBOX_DATABASE__URL",
            "postgres://postgres@127.0.0.1:55432/secret-db",
        ),
        ("GLASSBOX_AUTH__JWT_SECRET", "jwt-secret-never-in-a-child"),
        ("AWS_ACCESS_KEY_ID", "AKIA-NEVER-IN-A-CHILD"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-never-in-a-child"),
        ("AWS_SESSION_TOKEN", "aws-session-never-in-a-child"),
    ];
    // The stack's Postgres, reachable from here (so a refusal in the child means something).
    let database_url = testkit::admin_database_url();
    let postgres_address = database_url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    std::net::TcpStream::connect(&postgres_address).expect("Postgres answers this process");

    // A worker-side process holding the secrets (`worker-files extract --probe`, which builds the
    // sandbox exactly as the worker does) starts a confined child that reports what it sees.
    let output = std::process::Command::new(child_program())
        .args(["extract", "--probe", &postgres_address])
        .envs(secrets)
        .env("GLASSBOX_EMBEDDING__MODEL_DIR", testkit::model_dir())
        .env(
            "GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY",
            testkit::pdfium_library(),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: ProbeReport = serde_json::from_slice(&output.stdout).unwrap();
    let names: Vec<&str> = report
        .environment
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    for (name, _) in &report.environment {
        assert!(
            [
                "MALLOC_ARENA_MAX",
                "OMP_THREAD_LIMIT",
                "TOKENIZERS_PARALLELISM",
                "RUST_BACKTRACE",
                "TMPDIR",
                "HOME",
                // Paths, passed on only when the worker has them.
                "LD_LIBRARY_PATH",
                "TESSDATA_PREFIX",
            ]
            .contains(&name.as_str()),
            "unexpected variable {name} in the child: {names:?}"
        );
    }
    for (name, _) in secrets {
        assert!(!names.contains(&name), "{name} reached the child");
    }
    let connect_error = report
        .connect
        .expect_err("the child must not reach Postgres");
    println!("child connect to {postgres_address}: {connect_error}");
    for (_, value) in secrets {
        assert!(
            report
                .environment
                .iter()
                .all(|(_, seen)| !seen.contains(value)),
            "a secret value reached the child"
        );
    }

    let limit = |label: &str| {
        report
            .limits
            .lines()
            .find(|line| line.starts_with(label))
            .unwrap_or_else(|| panic!("{label} in {}", report.limits))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let defaults = ExtractLimits::default();
    assert!(
        limit("Max address space").contains(&format!("{0} {0} bytes", defaults.child_memory_bytes)),
        "{}",
        limit("Max address space")
    );
    assert!(
        limit("Max cpu time").contains(&format!(
            "{} {} seconds",
            defaults.child_cpu_seconds,
            defaults.child_cpu_seconds + 1
        )),
        "{}",
        limit("Max cpu time")
    );
    assert!(limit("Max file size").contains(&format!("{0} {0} bytes", defaults.child_file_bytes)));
    assert!(limit("Max open files").contains(&format!("{0} {0} files", defaults.child_open_files)));
    assert!(
        !limit("Max processes").contains("unlimited"),
        "{}",
        limit("Max processes")
    );
}

// ---- Structure-aware chunks, more formats, OCR (issue 14) ----

/// The chunks' texts and heading paths, in order.
fn chunk_sections(extraction: &Extraction) -> Vec<(String, Vec<String>)> {
    extraction
        .chunks
        .iter()
        .map(|chunk| (chunk.text.clone(), chunk.heading_path.clone()))
        .collect()
}

#[tokio::test]
async fn html_markdown_and_docx_headings_start_chunks_and_give_their_paths() {
    let html = b"<html><body><h1>Field guide</h1><p>How to use this guide.</p>\
<h2>Birds</h2><p>Robins sing at dawn.</p><h2>Trees &amp; shrubs</h2><p>Oaks grow slowly.</p></body></html>";
    let extraction = detected_and_chunked(html, Some("text/html"), None)
        .await
        .unwrap();
    assert_eq!(
        chunk_sections(&extraction),
        [
            (
                "Field guide\n\nHow to use this guide.".to_owned(),
                vec!["Field guide".to_owned()]
            ),
            (
                "Birds\n\nRobins sing at dawn.".to_owned(),
                vec!["Field guide".to_owned(), "Birds".to_owned()]
            ),
            (
                "Trees & shrubs\n\nOaks grow slowly.".to_owned(),
                vec!["Field guide".to_owned(), "Trees & shrubs".to_owned()]
            ),
        ]
    );

    let markdown = b"# Runbook\n\nPage the on-call.\n\n## Restore\n\n```\n# not a heading\n```\nRun the restore job.\n";
    let extraction = detected_and_chunked(markdown, Some("text/markdown"), None)
        .await
        .unwrap();
    let sections = chunk_sections(&extraction);
    assert_eq!(sections.len(), 2, "{sections:?}");
    assert_eq!(sections[1].1, ["Runbook", "Restore"]);
    assert!(sections[1].0.contains("# not a heading"), "{sections:?}");

    let body = r#"<w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>Handbook</w:t></w:r></w:p>
<w:p><w:r><w:t>Welcome aboard.</w:t></w:r></w:p>
<w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>Leave</w:t></w:r></w:p>
<w:p><w:r><w:t>Ask your manager first.</w:t></w:r></w:p>
<w:p><w:pPr><w:outlineLvl w:val="1"/></w:pPr><w:r><w:t>Travel</w:t></w:r></w:p>
<w:p><w:r><w:t>Book through the portal.</w:t></w:r></w:p>"#;
    let docx = fixtures::docx_minimal(body);
    let extraction = detected_and_chunked(&docx, None, Some("handbook.docx"))
        .await
        .unwrap();
    assert_eq!(
        chunk_sections(&extraction),
        [
            (
                "Handbook\n\nWelcome aboard.".to_owned(),
                vec!["Handbook".to_owned()]
            ),
            (
                "Leave\n\nAsk your manager first.".to_owned(),
                vec!["Handbook".to_owned(), "Leave".to_owned()]
            ),
            (
                "Travel\n\nBook through the portal.".to_owned(),
                vec!["Handbook".to_owned(), "Travel".to_owned()]
            ),
        ]
    );
}

#[tokio::test]
async fn forged_heading_marks_in_a_file_are_plain_text() {
    let html = "<p>before \u{E011}forged\u{E010} after</p>".as_bytes();
    let extraction = detected_and_chunked(html, Some("text/html"), None)
        .await
        .unwrap();
    assert_eq!(extraction.chunks.len(), 1);
    assert_eq!(extraction.chunks[0].text, "before forged after");
    assert!(extraction.chunks[0].heading_path.is_empty());
}

#[tokio::test]
async fn pptx_slides_are_pages_in_presentation_order_with_their_notes() {
    let bytes = fixtures::pptx_from_slides(&[
        (
            "Roadmap",
            "Ship the search release\nThen the OCR release",
            Some("Mention the hiring plan"),
        ),
        ("Risks", "Vendor delays", None),
    ]);
    assert_eq!(
        detect(&bytes, None, Some("deck.pptx")).unwrap(),
        DocumentKind::Pptx
    );
    let extraction = detected_and_chunked(&bytes, None, Some("deck.pptx"))
        .await
        .unwrap();
    let document = &extraction.document;
    assert_eq!(document.kind, DocumentKind::Pptx);
    assert_eq!(document.engine, "pptx");
    let pages: Vec<(Option<u32>, Option<TextPart>, &str)> = document
        .pages
        .iter()
        .map(|page| (page.number, page.part, page.text.as_str()))
        .collect();
    // The slide number placeholder is not content; slide files are numbered in reverse.
    assert_eq!(
        pages,
        [
            (
                Some(1),
                None,
                "Roadmap\n\nShip the search release\nThen the OCR release"
            ),
            (Some(1), Some(TextPart::Notes), "Mention the hiring plan"),
            (Some(2), None, "Risks\n\nVendor delays"),
        ]
    );
    let notes_chunk = extraction
        .chunks
        .iter()
        .find(|chunk| chunk.part == Some(TextPart::Notes))
        .unwrap();
    assert_eq!(notes_chunk.page, Some(1));
    let risks = extraction.chunks.last().unwrap();
    assert_eq!(
        (risks.page, risks.heading_path.clone()),
        (Some(2), vec!["Risks".to_owned()])
    );
}

#[tokio::test]
async fn xlsx_and_csv_rows_carry_their_headers_one_page_per_sheet() {
    let staff: &[&[&str]] = &[
        &["Name", "Role", "Office"],
        &["Ada", "Engineer", "London"],
        &["Grace", "", "Arlington"],
    ];
    let budget: &[&[&str]] = &[&["Item", "Cost"], &["Servers", "1200.5"]];
    let bytes = fixtures::xlsx_from_sheets(&[("Staff", staff), ("Budget & plan", budget)]);
    assert_eq!(
        detect(&bytes, None, Some("book.xlsx")).unwrap(),
        DocumentKind::Xlsx
    );
    let extraction = detected_and_chunked(&bytes, None, Some("book.xlsx"))
        .await
        .unwrap();
    let document = &extraction.document;
    assert_eq!(document.engine, "xlsx");
    assert_eq!(document.pages.len(), 2);
    assert_eq!(document.pages[0].number, Some(1));
    assert_eq!(
        document.pages[0].text,
        "Staff\n\nName | Role | Office\nName: Ada | Role: Engineer | Office: London\nName: Grace | Office: Arlington"
    );
    assert_eq!(
        document.pages[1].text,
        "Budget & plan\n\nItem | Cost\nItem: Servers | Cost: 1200.5"
    );
    assert_eq!(extraction.chunks[1].heading_path, ["Budget & plan"]);

    let csv =
        b"city,country,population\nLyon,France,\"522,250\"\n\"Porto\nnorth\",Portugal,231962\n";
    assert_eq!(
        detect(csv, None, Some("cities.csv")).unwrap(),
        DocumentKind::Csv
    );
    assert_eq!(
        detect(csv, Some("text/csv"), None).unwrap(),
        DocumentKind::Csv
    );
    let extraction = detected_and_chunked(csv, Some("text/csv"), Some("cities.csv"))
        .await
        .unwrap();
    assert_eq!(extraction.document.engine, "csv");
    assert_eq!(
        extraction.document.pages[0].text,
        "city | country | population\ncity: Lyon | country: France | population: 522,250\ncity: Porto north | country: Portugal | population: 231962"
    );
}

#[tokio::test]
async fn epub_chapters_are_pages_in_spine_order() {
    let bytes = fixtures::epub_from_chapters(&[
        ("Departure", "The ship left at noon.\n\nGulls followed it."),
        ("Arrival", "Land came into sight on the third day."),
    ]);
    assert_eq!(
        detect(&bytes, None, Some("voyage.epub")).unwrap(),
        DocumentKind::Epub
    );
    let extraction = detected_and_chunked(&bytes, None, None).await.unwrap();
    let document = &extraction.document;
    assert_eq!(document.engine, "epub");
    let pages: Vec<(Option<u32>, &str)> = document
        .pages
        .iter()
        .map(|page| (page.number, page.text.as_str()))
        .collect();
    assert_eq!(
        pages,
        [
            (
                Some(1),
                "Departure\n\nThe ship left at noon.\n\nGulls followed it."
            ),
            (Some(2), "Arrival\n\nLand came into sight on the third day."),
        ]
    );
    assert_eq!(extraction.chunks[1].heading_path, ["Arrival"]);
}

/// Hostile variants of a ZIP-based format: a bomb in its main part, the file cut in half,
/// the ZIP magic overwritten, and an archive missing the part that names the format.
async fn zip_format_rejects_hostile_inputs(
    entries: Vec<(String, Vec<u8>)>,
    main_part: &str,
    kind: DocumentKind,
) {
    let borrowed: Vec<(&str, &[u8])> = entries
        .iter()
        .filter(|(name, _)| name != main_part)
        .map(|(name, content)| (name.as_str(), content.as_slice()))
        .collect();
    let limits = ExtractLimits::default();

    let bomb = fixtures::zip_bomb_with(&borrowed, main_part);
    assert_eq!(detect(&bomb, None, None).unwrap(), kind);
    let error = isolated(&bomb, kind, &limits).await.unwrap_err();
    assert_eq!(error.code(), "zip_bomb", "{kind}: {error}");

    let all: Vec<(&str, &[u8])> = entries
        .iter()
        .map(|(name, content)| (name.as_str(), content.as_slice()))
        .collect();
    let valid = fixtures::zip_from_entries(&all);
    let mut truncated = valid.clone();
    truncated.truncate(valid.len() / 2);
    let error = isolated(&truncated, kind, &limits).await.unwrap_err();
    assert_eq!(error.code(), "corrupt", "{kind}: {error}");

    let mut wrong_magic = valid.clone();
    wrong_magic[..4].copy_from_slice(b"XXXX");
    let error = detect(&wrong_magic, None, Some(&format!("file.{kind}"))).unwrap_err();
    assert_eq!(error.code(), "unsupported_type", "{kind}: {error}");
    let error = isolated(&wrong_magic, kind, &limits).await.unwrap_err();
    assert_eq!(error.code(), "corrupt", "{kind}: {error}");

    let without_main = fixtures::zip_from_entries(&borrowed);
    let error = isolated(&without_main, kind, &limits).await.unwrap_err();
    assert!(
        ["unsupported_type", "corrupt"].contains(&error.code()),
        "{kind}: {error}"
    );
}

#[tokio::test]
async fn pptx_xlsx_and_epub_reject_bombs_truncation_and_wrong_magic_with_typed_errors() {
    zip_format_rejects_hostile_inputs(
        fixtures::pptx_entries(&[("Title", "Body", Some("Notes"))]),
        "ppt/slides/slide1.xml",
        DocumentKind::Pptx,
    )
    .await;
    zip_format_rejects_hostile_inputs(
        fixtures::xlsx_entries(&[("Sheet", &[&["a", "b"], &["1", "2"]])]),
        "xl/sharedStrings.xml",
        DocumentKind::Xlsx,
    )
    .await;
    zip_format_rejects_hostile_inputs(
        fixtures::epub_entries(&[("One", "Text")]),
        "OEBPS/text/chapter1.xhtml",
        DocumentKind::Epub,
    )
    .await;
}

#[tokio::test]
async fn hostile_csv_gets_typed_outcomes() {
    // Binary content declared as CSV is not text.
    let error = detect(
        b"a,b\n\x00\x01\x02\x00,\x00",
        Some("text/csv"),
        Some("x.csv"),
    )
    .unwrap_err();
    assert_eq!(error.code(), "unsupported_type");
    // Too large for the text limit.
    let limits = ExtractLimits {
        max_text_bytes: 1024,
        ..ExtractLimits::default()
    };
    let big = "a,b\n".to_owned() + &"1,2\n".repeat(1000);
    let error = isolated(big.as_bytes(), DocumentKind::Csv, &limits)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "too_large");
    // An unterminated quote swallows the rest into one field, and loses nothing.
    let extraction = isolated(
        b"h1,h2\n\"open,quote\nnext",
        DocumentKind::Csv,
        &ExtractLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(extraction.pages[0].text, "h1 | h2\nh1: open,quote next");
    // Headers only: the header line is the text.
    let extraction = isolated(
        b"only,headers\n",
        DocumentKind::Csv,
        &ExtractLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(extraction.pages[0].text, "only | headers");
}

const SCANNED_TEXT: &str = "Quarterly maintenance report\n\nThe lighthouse generator was serviced in March.\nAll beacon lamps passed inspection.";

#[tokio::test]
async fn pages_without_a_text_layer_are_read_by_ocr_within_the_page_budget() {
    let scanned = fixtures::scanned_pdf(&[SCANNED_TEXT, "Second page about harbour cranes."]);
    let extraction = detected_and_chunked(&scanned, Some("application/pdf"), None)
        .await
        .unwrap();
    let first = &extraction.document.pages[0];
    println!("ocr text: {:?}", first.text);
    assert!(first.ocr);
    assert!(
        squash(&first.text).contains("lighthouse generator was serviced in March"),
        "{}",
        first.text
    );
    assert!(extraction.chunks.iter().all(|chunk| chunk.ocr));
    assert!(extraction.document.pages[1].text.contains("harbour cranes"));

    // A budget of one page: the second page stays empty, the file is still read.
    let file = write_temp(&scanned, ".pdf");
    let limits = ExtractLimits {
        ocr_max_pages: 1,
        ..ExtractLimits::default()
    };
    let document = sandbox()
        .run(&request(
            file.path(),
            Some(DocumentKind::Pdf),
            pdfium(),
            &limits,
        ))
        .await
        .unwrap()
        .document;
    assert!(document.pages[0].ocr && !document.pages[0].text.is_empty());
    assert!(!document.pages[1].ocr && document.pages[1].text.is_empty());

    // OCR switched off: a scan is `empty_text`, as before.
    let limits = ExtractLimits {
        ocr_max_pages: 0,
        ..ExtractLimits::default()
    };
    let error = isolated(&scanned, DocumentKind::Pdf, &limits)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "empty_text");
}

#[tokio::test]
async fn images_are_read_by_ocr_and_broken_images_get_typed_errors() {
    let png = fixtures::scanned_png("Invoice number 4471 is due in April.");
    assert_eq!(
        detect(&png, Some("image/png"), Some("scan.png")).unwrap(),
        DocumentKind::Image
    );
    let extraction = detected_and_chunked(&png, Some("image/png"), Some("scan.png"))
        .await
        .unwrap();
    assert_eq!(extraction.document.engine, "tesseract");
    assert!(extraction.document.pages[0].ocr);
    assert!(
        squash(&extraction.document.pages[0].text).contains("Invoice number 4471 is due in April"),
        "{:?}",
        extraction.document.pages[0].text
    );
    assert!(extraction.chunks.iter().all(|chunk| chunk.ocr));

    let mut truncated = png.clone();
    truncated.truncate(png.len() / 3);
    let error = isolated(&truncated, DocumentKind::Image, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "corrupt", "{error}");

    // A PNG header claiming 100,000 x 100,000 pixels is refused before any pixel is decoded.
    let mut huge = png[..33].to_vec();
    huge[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    huge[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let error = isolated(&huge, DocumentKind::Image, &ExtractLimits::default())
        .await
        .unwrap_err();
    assert!(["too_large", "corrupt"].contains(&error.code()), "{error}");
}

#[tokio::test]
async fn pdf_outline_entries_frame_the_chunks_of_their_pages() {
    let bytes = fixtures::pdf_with_outline(
        &[
            "Installing the package on a fresh system.",
            "Configuring the main options file.",
            "Running the first job and reading its log.",
        ],
        &[("Setup", 0, &[("Configuration", 1)]), ("Usage", 2, &[])],
    );
    let extraction = detected_and_chunked(&bytes, Some("application/pdf"), None)
        .await
        .unwrap();
    let paths: Vec<(Option<u32>, Vec<String>)> = extraction
        .chunks
        .iter()
        .map(|chunk| (chunk.page, chunk.heading_path.clone()))
        .collect();
    assert_eq!(
        paths,
        [
            (Some(1), vec!["Setup".to_owned()]),
            (
                Some(2),
                vec!["Setup".to_owned(), "Configuration".to_owned()]
            ),
            (Some(3), vec!["Usage".to_owned()]),
        ]
    );
}
