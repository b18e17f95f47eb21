//! Hostile and broken files each fail with their own error code, and the worker that
//! met them stays up and keeps working.

use std::time::Duration;

use testkit::fixtures;
use testkit::{TestApp, TestOptions};

const WORKER: &str = env!("CARGO_BIN_EXE_worker-files");
const PROCESSING: Duration = Duration::from_secs(120);

#[tokio::test]
async fn each_bad_input_gets_its_code_and_the_worker_survives() {
    let app = TestApp::spawn().await.unwrap();
    let mut worker = app
        .spawn_worker(
            WORKER,
            &[
                ("GLASSBOX_FILES_WORKER__EXTRACT_TIMEOUT_SECS", "5"),
                ("GLASSBOX_FILES_WORKER__MAX_FILE_BYTES", "2000000"),
            ],
        )
        .unwrap();
    let cases: Vec<(&str, &str, Vec<u8>, &[&str])> = vec![
        (
            "truncated.pdf",
            "application/pdf",
            fixtures::truncated_pdf(),
            &["corrupt"],
        ),
        (
            "encrypted.pdf",
            "application/pdf",
            fixtures::encrypted_pdf(),
            &["encrypted"],
        ),
        (
            "random.pdf",
            "application/pdf",
            fixtures::random_bytes(64 * 1024, 7),
            &["unsupported_type"],
        ),
        (
            "bomb.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            fixtures::zip_bomb(),
            &["zip_bomb"],
        ),
        (
            "notdocx.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            fixtures::zip_not_docx(),
            &["unsupported_type"],
        ),
        ("empty.txt", "text/plain", Vec::new(), &["empty_text"]),
        (
            "huge.txt",
            "text/plain",
            vec![b'a'; 3_000_000],
            &["too_large"],
        ),
        (
            "hostile.pdf",
            "application/pdf",
            fixtures::hostile_pdf(),
            // pdfium bounds its recursion (empty_text); pdf-extract overflows the child's stack.
            &[
                "extract_crashed",
                "extract_timeout",
                "empty_text",
                "corrupt",
            ],
        ),
        (
            "image-only.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            fixtures::docx_image_only(),
            &["empty_text"],
        ),
    ];
    let mut uploaded = Vec::new();
    for (name, content_type, bytes, codes) in cases {
        let id = app
            .upload(name, content_type, bytes)
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        uploaded.push((name, id, codes));
    }
    for (name, id, codes) in uploaded {
        let file = app
            .wait_for_file(id, &["failed", "ready", "dead_lettered"], PROCESSING)
            .await
            .unwrap();
        assert_eq!(file["status"], "failed", "{name}: {file}");
        assert_eq!(file["error_class"], "permanent", "{name}: {file}");
        let code = file["error_code"].as_str().unwrap_or_default();
        assert!(
            codes.contains(&code),
            "{name}: expected {codes:?}, got {file}"
        );
        assert!(
            file["error_message"]
                .as_str()
                .is_some_and(|message| !message.is_empty()),
            "{name}: {file}"
        );
        assert_eq!(
            file["attempts"], 1,
            "permanent errors are not retried: {name}: {file}"
        );
    }
    assert!(
        worker.is_running(),
        "the worker must survive every bad input"
    );
    assert!(
        app.dead_letters().await.unwrap().is_empty(),
        "permanent failures are deleted, not dead-lettered"
    );

    // And it still does real work afterwards.
    let id = app
        .upload(
            "after.md",
            "text/markdown",
            b"# Still alive\n\nThe worker keeps going after hostile input.".to_vec(),
        )
        .await
        .unwrap();
    app.wait_for_file(id, &["ready"], PROCESSING).await.unwrap();
    assert!(worker.is_running());
}

#[tokio::test]
async fn an_unparseable_message_goes_to_the_dlq_without_harm() {
    let app = TestApp::spawn().await.unwrap();
    let mut worker = app.spawn_worker(WORKER, &[]).unwrap();
    app.queue.send("this is {not json").await.unwrap();
    app.queue
        .send(r#"{"v":1,"kind":"file.process","job_id":"not-a-uuid","org_id":"x"}"#)
        .await
        .unwrap();
    let dead = app
        .wait_for_dead_letters(2, Duration::from_secs(30))
        .await
        .expect("both poison messages reach the DLQ");
    assert!(
        dead.iter().any(|body| body.contains("{not json")),
        "{dead:?}"
    );
    assert!(worker.is_running());
    let id = app
        .upload(
            "fine.txt",
            "text/plain",
            b"A good file after poison.".to_vec(),
        )
        .await
        .unwrap();
    app.wait_for_file(id, &["ready"], PROCESSING).await.unwrap();
}

#[tokio::test]
async fn an_embedding_endpoint_that_fails_twice_then_recovers_still_completes() {
    use testkit::scripted::{EmbeddingReply, ScriptedEmbeddings};
    let app = TestApp::spawn().await.unwrap();
    let endpoint = ScriptedEmbeddings::start(vec![
        EmbeddingReply::Status(503),
        EmbeddingReply::Status(503),
        EmbeddingReply::Vectors,
    ])
    .await
    .unwrap();
    let base_url = endpoint.base_url();
    let _worker = app
        .spawn_worker(
            WORKER,
            &[
                ("GLASSBOX_EMBEDDING__PROVIDER", "openai"),
                ("GLASSBOX_EMBEDDING__BASE_URL", &base_url),
                ("GLASSBOX_EMBEDDING__MODEL", "scripted"),
                ("GLASSBOX_EMBEDDING__DIMENSIONS", "8"),
                ("GLASSBOX_EMBEDDING__MAX_RETRIES", "3"),
            ],
        )
        .unwrap();
    let id = app
        .upload(
            "flaky.txt",
            "text/plain",
            b"Flaky embedding endpoints are retried with backoff.".to_vec(),
        )
        .await
        .unwrap();
    let file = app
        .wait_for_file(id, &["ready", "failed", "dead_lettered"], PROCESSING)
        .await
        .unwrap();
    assert_eq!(file["status"], "ready", "{file}");
    assert_eq!(file["embedding_model"], "openai:scripted@8");
    assert!(
        endpoint.requests() >= 3,
        "two failures and a success: {}",
        endpoint.requests()
    );
}

#[tokio::test]
async fn an_embedding_endpoint_that_always_fails_dead_letters_the_file() {
    use testkit::scripted::{EmbeddingReply, ScriptedEmbeddings};
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 2,
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let endpoint = ScriptedEmbeddings::start(vec![EmbeddingReply::Status(500)])
        .await
        .unwrap();
    let base_url = endpoint.base_url();
    let mut worker = app
        .spawn_worker(
            WORKER,
            &[
                ("GLASSBOX_EMBEDDING__PROVIDER", "openai"),
                ("GLASSBOX_EMBEDDING__BASE_URL", &base_url),
                ("GLASSBOX_EMBEDDING__MODEL", "scripted"),
                ("GLASSBOX_EMBEDDING__DIMENSIONS", "8"),
                ("GLASSBOX_EMBEDDING__MAX_RETRIES", "1"),
            ],
        )
        .unwrap();
    let id = app
        .upload(
            "doomed.txt",
            "text/plain",
            b"This endpoint never answers well.".to_vec(),
        )
        .await
        .unwrap();
    let file = app
        .wait_for_file(id, &["dead_lettered", "failed", "ready"], PROCESSING)
        .await
        .unwrap();
    assert_eq!(file["status"], "dead_lettered", "{file}");
    assert_eq!(file["error_class"], "transient", "{file}");
    assert_eq!(file["error_code"], "embedding_unavailable", "{file}");
    assert_eq!(
        file["attempts"], 2,
        "one attempt per allowed receive: {file}"
    );
    // SQS itself moves the message on the receive after the last allowed one.
    let dead = app
        .wait_for_dead_letters(1, Duration::from_secs(30))
        .await
        .expect("the message reaches the DLQ");
    assert!(dead[0].contains(&id.to_string()), "{dead:?}");
    assert!(worker.is_running());
}

const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// Every input that used to end in the wrong state is read (or typed) by a worker that stays up, then
/// the worker answers SIGTERM within its deadline while a 20 MB one-line file is in its sandbox.
#[tokio::test]
async fn odd_and_large_inputs_are_read_and_sigterm_is_honoured_mid_file() {
    use testkit::scripted::{EmbeddingReply, ScriptedEmbeddings};
    let app = TestApp::spawn().await.unwrap();
    // A zero-cost embedder: the model's speed is not what this test is about.
    let endpoint = ScriptedEmbeddings::start(vec![EmbeddingReply::Vectors])
        .await
        .unwrap();
    let base_url = endpoint.base_url();
    let environment = [
        ("GLASSBOX_EMBEDDING__PROVIDER", "openai"),
        ("GLASSBOX_EMBEDDING__BASE_URL", base_url.as_str()),
        ("GLASSBOX_EMBEDDING__MODEL", "scripted"),
        ("GLASSBOX_EMBEDDING__DIMENSIONS", "8"),
        ("GLASSBOX_EMBEDDING__MAX_INPUTS_PER_REQUEST", "2048"),
        ("GLASSBOX_FILES_WORKER__SHUTDOWN_DEADLINE_SECS", "5"),
        ("GLASSBOX_FILES_WORKER__CONCURRENCY", "2"),
        ("GLASSBOX_FILES_WORKER__MAX_FILE_BYTES", "67108864"),
        ("GLASSBOX_FILES_WORKER__EXTRACT_TIMEOUT_SECS", "300"),
    ];
    let mut worker = app.spawn_worker(WORKER, &environment).unwrap();

    let mut utf16 = vec![0xFF, 0xFE];
    for unit in "UTF-16 text with a byte order mark.".encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let mut invalid_utf8 = b"Mostly fine text with one broken byte here: ".repeat(30);
    invalid_utf8.extend_from_slice(b"\xFF end.");
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "minimal.docx",
            DOCX,
            fixtures::docx_minimal_paragraphs(&["Three parts are enough."]),
            "Three parts are enough.",
        ),
        (
            "parts.docx",
            DOCX,
            fixtures::docx_every_part(),
            "FOOTNOTE-TEXT",
        ),
        (
            "entities.docx",
            DOCX,
            fixtures::docx_with_entities(),
            "&lol9;",
        ),
        ("utf16.txt", "text/plain", utf16, "byte order mark"),
        ("broken.txt", "text/plain", invalid_utf8, "\u{FFFD} end."),
        (
            "deep.html",
            "text/html",
            fixtures::deeply_nested_html(2 * 1024 * 1024),
            "very deep tree",
        ),
        (
            "no-mediabox.pdf",
            "application/pdf",
            fixtures::panicking_pdf(),
            "No media box here.",
        ),
        (
            "line.txt",
            "text/plain",
            fixtures::one_long_line(512 * 1024),
            "alpha bravo",
        ),
    ];
    let mut uploaded = Vec::new();
    for (name, content_type, bytes, expected) in cases {
        let id = app.upload(name, content_type, bytes).await.unwrap();
        uploaded.push((name, id, expected));
    }
    for (name, id, expected) in &uploaded {
        let file = app
            .wait_for_file(*id, &["failed", "ready", "dead_lettered"], PROCESSING)
            .await
            .unwrap();
        assert_eq!(file["status"], "ready", "{name}: {file}");
        // Search would need the scripted model on the API's side too: read the stored chunks.
        let chunks: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT text, part FROM chunks WHERE file_id = $1 ORDER BY chunk_index")
                .bind(id)
                .fetch_all(&app.pool)
                .await
                .unwrap();
        assert!(
            chunks.iter().any(|(text, _)| text.contains(expected)),
            "{name}: no chunk holds {expected:?}"
        );
        if *name == "parts.docx" {
            let (_, part) = chunks
                .iter()
                .find(|(text, _)| text.contains("FOOTNOTE-TEXT"))
                .unwrap();
            assert_eq!(part.as_deref(), Some("footnote"));
        }
        let engine: Option<String> =
            sqlx::query_scalar("SELECT extraction_engine FROM files WHERE id = $1")
                .bind(id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if *name == "no-mediabox.pdf" {
            assert_eq!(
                engine.as_deref(),
                Some("pdfium"),
                "the PDF pdf-extract panics on"
            );
        }
        if *name == "line.txt" {
            assert!(
                file["chunk_count"].as_i64().unwrap_or_default() > 500,
                "{file}"
            );
        }
    }
    assert!(worker.is_running());

    // Now SIGTERM while a 20 MB line is inside the sandbox: the worker stops within its deadline,
    // releases the file, and its child does not outlive it.
    let id = app
        .upload(
            "line-again.txt",
            "text/plain",
            fixtures::one_long_line(20 * 1024 * 1024 + 1),
        )
        .await
        .unwrap();
    testkit::wait_until(Duration::from_secs(60), || async {
        let (_, file) = app.get(&format!("/v1/files/{id}")).await.unwrap();
        file["stage"] == "extract"
    })
    .await
    .unwrap();
    // The extraction server and the child it forks for the file (within moments of the stage).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let children = loop {
        let found = testkit::processes::descendants_of(worker.pid());
        if found.len() >= 2 {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the 20 MB line is in an extraction child of the server: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The work is the child's: the worker itself does not grow with the file.
    let worker_rss_kib = std::fs::read_to_string(format!("/proc/{}/status", worker.pid()))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| {
                    value
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .unwrap_or_default();
    assert!(
        worker_rss_kib < 400 * 1024,
        "worker RSS {worker_rss_kib} KiB"
    );
    assert!(worker.is_running());
    let started = std::time::Instant::now();
    let status = worker.terminate(Duration::from_secs(15)).await.unwrap();
    println!(
        "worker exited with {status} {:?} after SIGTERM; children then: {children:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    for child in children {
        assert!(
            !std::path::Path::new(&format!("/proc/{child}")).exists()
                || std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .is_ok_and(|stat| stat.contains(") Z ")),
            "extraction child {child} outlived the worker"
        );
    }
    let file = app
        .wait_for_file(
            id,
            &["queued", "retrying", "ready"],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    println!("after SIGTERM the file is {}", file["status"]);
}
