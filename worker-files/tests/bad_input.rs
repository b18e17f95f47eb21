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
            &["extract_crashed", "extract_timeout"],
        ),
        (
            "panicking.pdf",
            "application/pdf",
            fixtures::panicking_pdf(),
            &["extract_crashed", "extract_timeout"],
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
