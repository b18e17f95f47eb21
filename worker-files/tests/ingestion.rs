//! File ingestion end to end on the real stack: moto S3/SQS, Postgres with pgvector, the
//! local model, api-lite in process and worker-files as a real child process.

use std::time::Duration;

use serde_json::json;
use testkit::TestApp;
use testkit::fixtures;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-files");
const PROCESSING: Duration = Duration::from_secs(90);

const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

async fn chunk_rows(app: &TestApp, file_id: uuid::Uuid) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT chunk_index) FROM chunks WHERE file_id = $1")
        .bind(file_id)
        .fetch_one(&app.pool)
        .await
        .expect("count chunks")
}

#[tokio::test]
async fn three_documents_are_ingested_and_the_right_one_is_found_first() {
    let app = TestApp::spawn().await.unwrap();
    let _worker = app.spawn_worker(WORKER, &[]).unwrap();

    let pdf = fixtures::pdf_from_pages(&[
        "Volcanic soils on the island support vineyards. Basalt weathers into fertile ground rich in minerals.",
        "The harbour lighthouse was rebuilt in granite after the storm of the century; its lamp turns every ten seconds.",
    ]);
    let docx = fixtures::docx_from_paragraphs(&[
        "Quarterly payroll runs on the last business day of each month.",
        "Employees submit expense reports through the finance portal before the fifth.",
    ]);
    let markdown = "# Sourdough\n\nFeed the starter twice a day with equal weights of flour and water.\n\n## Baking\n\nBake the loaf in a preheated dutch oven at high heat.\n";

    let pdf_id = app
        .upload("island.pdf", "application/pdf", pdf)
        .await
        .unwrap();
    let docx_id = app.upload("payroll.docx", DOCX, docx).await.unwrap();
    let markdown_id = app
        .upload("bread.md", "text/markdown", markdown.as_bytes().to_vec())
        .await
        .unwrap();

    let pdf_file = app
        .wait_for_file(pdf_id, &["ready"], PROCESSING)
        .await
        .unwrap();
    let docx_file = app
        .wait_for_file(docx_id, &["ready"], PROCESSING)
        .await
        .unwrap();
    let markdown_file = app
        .wait_for_file(markdown_id, &["ready"], PROCESSING)
        .await
        .unwrap();

    assert_eq!(pdf_file["detected_type"], "pdf");
    assert_eq!(pdf_file["pages"], 2);
    assert_eq!(docx_file["detected_type"], "docx");
    assert_eq!(markdown_file["detected_type"], "markdown");
    // The file view says what read the text and which extractor version.
    let pdf_engine = if testkit::pdfium_library_if_installed().is_some() {
        "pdfium"
    } else {
        "pdf-extract"
    };
    assert_eq!(pdf_file["extraction_engine"], pdf_engine, "{pdf_file}");
    assert_eq!(docx_file["extraction_engine"], "docx", "{docx_file}");
    assert_eq!(
        markdown_file["extraction_engine"], "text",
        "{markdown_file}"
    );
    for file in [&pdf_file, &docx_file, &markdown_file] {
        assert_eq!(
            file["extractor_version"],
            shared::EXTRACTOR_VERSION,
            "{file}"
        );
        assert_eq!(file["embedding_model"], "all-minilm-l6-v2", "{file}");
        assert!(file["chunk_count"].as_i64().unwrap() >= 1, "{file}");
        assert_eq!(file["attempts"], 1, "{file}");
        assert!(file["error_code"].is_null(), "{file}");
        for stage in ["download", "extract", "chunk", "embed", "store"] {
            assert!(
                file["stage_durations_ms"][stage].is_u64(),
                "missing {stage} timing: {file}"
            );
        }
    }

    let (status, found) = app
        .post(
            "/v1/search",
            json!({ "query": "when is the lighthouse lamp turning", "top_k": 3 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{found}");
    let first = &found["hits"][0];
    assert_eq!(first["file_id"], pdf_id.to_string(), "{found}");
    assert_eq!(first["page"], 2, "the lighthouse is on page 2: {found}");
    assert!(
        first["text"].as_str().unwrap().contains("lighthouse"),
        "{found}"
    );
    assert!(first["vector_score"].as_f64().unwrap() > 0.3, "{found}");
    let (start, end) = (
        first["byte_start"].as_i64().unwrap(),
        first["byte_end"].as_i64().unwrap(),
    );
    assert!(end > start);

    let (_, found) = app
        .post(
            "/v1/search",
            json!({ "query": "how do I submit my expenses", "top_k": 2 }),
        )
        .await
        .unwrap();
    assert_eq!(found["hits"][0]["file_id"], docx_id.to_string(), "{found}");
    let (_, found) = app
        .post(
            "/v1/search",
            json!({ "query": "feeding a sourdough starter", "top_k": 2 }),
        )
        .await
        .unwrap();
    assert_eq!(
        found["hits"][0]["file_id"],
        markdown_id.to_string(),
        "{found}"
    );

    // Restricted to one file, only that file answers.
    let (_, found) = app
        .post(
            "/v1/search",
            json!({ "query": "lighthouse", "top_k": 5, "file_ids": [docx_id] }),
        )
        .await
        .unwrap();
    assert!(
        found["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|hit| hit["file_id"] == docx_id.to_string()),
        "{found}"
    );
}

#[tokio::test]
async fn the_same_message_delivered_three_times_leaves_one_set_of_chunks() {
    let app = TestApp::spawn().await.unwrap();
    let text = "Duplicate deliveries must be harmless. ".repeat(60);
    let id = app
        .upload("dup.txt", "text/plain", text.into_bytes())
        .await
        .unwrap();
    // The outbox already sent one message; send the very same body three more times.
    let body = shared::queue::JobMessage::new(shared::queue::JobKind::FileProcess, id, app.org_id)
        .to_body();
    for _ in 0..3 {
        app.queue.send(&body).await.unwrap();
    }
    let _first = app.spawn_worker(WORKER, &[]).unwrap();
    let _second = app.spawn_worker(WORKER, &[]).unwrap();
    let file = app.wait_for_file(id, &["ready"], PROCESSING).await.unwrap();
    let chunk_count = file["chunk_count"].as_i64().unwrap();
    // Let every copy be received and acknowledged.
    testkit::wait_until(Duration::from_secs(40), || async {
        app.queue
            .depth()
            .await
            .map(|depth| depth.visible + depth.in_flight == 0)
            .unwrap_or(false)
    })
    .await
    .expect("all copies acknowledged");
    let (rows, distinct) = chunk_rows(&app, id).await;
    assert_eq!(rows, chunk_count);
    assert_eq!(distinct, chunk_count);
    assert!(
        app.dead_letters().await.unwrap().is_empty(),
        "no copy may end in the DLQ"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_file_is_finished_by_another() {
    let app = TestApp::spawn().await.unwrap();
    let pdf = fixtures::pdf_from_pages(&[
        "Crash recovery keeps exactly one set of chunks.",
        "Second page text for the crash test.",
    ]);
    let id = app
        .upload("crash.pdf", "application/pdf", pdf)
        .await
        .unwrap();
    let mut doomed = app
        .spawn_worker(
            WORKER,
            &[("GLASSBOX_FILES_WORKER__FAILPOINT", "before_store")],
        )
        .unwrap();
    testkit::wait_until(PROCESSING, || async {
        app.get(&format!("/v1/files/{id}"))
            .await
            .map(|(_, file)| file["stage"] == "store")
            .unwrap_or(false)
    })
    .await
    .expect("the first worker reaches the store stage");
    doomed.kill().await.unwrap();

    let _rescuer = app.spawn_worker(WORKER, &[]).unwrap();
    let file = app.wait_for_file(id, &["ready"], PROCESSING).await.unwrap();
    assert_eq!(file["attempts"], 2, "one attempt per worker: {file}");
    let (rows, distinct) = chunk_rows(&app, id).await;
    assert_eq!(rows, file["chunk_count"].as_i64().unwrap());
    assert_eq!(rows, distinct);
}

#[tokio::test]
async fn heartbeats_keep_a_long_file_and_sigterm_releases_it_to_another_worker_at_once() {
    let app = TestApp::spawn().await.unwrap();
    let id = app
        .upload(
            "release.txt",
            "text/plain",
            b"Graceful shutdown hands the file back.".to_vec(),
        )
        .await
        .unwrap();
    let mut stopping = app
        .spawn_worker(
            WORKER,
            &[
                ("GLASSBOX_FILES_WORKER__FAILPOINT", "before_store"),
                ("GLASSBOX_FILES_WORKER__SHUTDOWN_DEADLINE_SECS", "1"),
            ],
        )
        .unwrap();
    testkit::wait_until(PROCESSING, || async {
        app.get(&format!("/v1/files/{id}"))
            .await
            .map(|(_, file)| file["stage"] == "store")
            .unwrap_or(false)
    })
    .await
    .unwrap();
    // A second worker waits while the first holds the file well past the lease (4 s)
    // and the visibility timeout (6 s): heartbeats extend both.
    let _next = app.spawn_worker(WORKER, &[]).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, file) = app.get(&format!("/v1/files/{id}")).await.unwrap();
    assert_eq!(file["status"], "processing", "{file}");
    assert_eq!(file["attempts"], 1, "nobody took the file over: {file}");
    let metrics = stopping.metrics().await.unwrap();
    let extensions = metrics
        .lines()
        .find(|line| line.starts_with("glassbox_heartbeat_extensions_total"))
        .unwrap_or_default()
        .to_string();
    let count: f64 = extensions
        .rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0);
    assert!(
        count >= 2.0,
        "at least two heartbeats in 10 s: {extensions:?}"
    );

    let exit = stopping.terminate(Duration::from_secs(15)).await.unwrap();
    assert!(exit.success(), "graceful exit: {exit:?}");
    // Released, not left leased: the waiting worker finishes it without a lease expiry.
    let file = app.wait_for_file(id, &["ready"], PROCESSING).await.unwrap();
    assert_eq!(file["attempts"], 2);
}

#[tokio::test]
async fn identical_content_is_embedded_once_per_org_and_model() {
    use testkit::scripted::{EmbeddingReply, ScriptedEmbeddings};
    let app = TestApp::spawn().await.unwrap();
    let endpoint = ScriptedEmbeddings::start(vec![EmbeddingReply::Vectors])
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
            ],
        )
        .unwrap();
    let text = "Reuse saves money on paid embedding endpoints. ".repeat(30);
    let first = app
        .upload("one.txt", "text/plain", text.clone().into_bytes())
        .await
        .unwrap();
    app.wait_for_file(first, &["ready"], PROCESSING)
        .await
        .unwrap();
    let requests_after_first = endpoint.requests();
    assert!(requests_after_first >= 1);

    let second = app
        .upload("copy.txt", "text/plain", text.into_bytes())
        .await
        .unwrap();
    let file = app
        .wait_for_file(second, &["ready"], PROCESSING)
        .await
        .unwrap();
    assert_eq!(
        endpoint.requests(),
        requests_after_first,
        "the copy must not be embedded again"
    );
    let (copies,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM chunks a JOIN chunks b ON a.text_sha256 = b.text_sha256 AND a.chunk_index = b.chunk_index \
         WHERE a.file_id = $1 AND b.file_id = $2 AND a.embedding = b.embedding",
    )
    .bind(first)
    .bind(second)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(copies, file["chunk_count"].as_i64().unwrap());

    // Another org gets no reuse: its text is embedded on its own.
    let other_org = uuid::Uuid::now_v7();
    let other_token = app.token_for(other_org);
    let (status, created) = app
        .post_as(
            "/v1/files",
            json!({ "name": "theirs.txt", "content_type": "text/plain", "size": 12 }),
            &other_token,
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let put = app
        .http
        .put(created["upload"]["url"].as_str().unwrap())
        .header("content-type", "text/plain")
        .body("their words!")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let theirs: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let (status, _) = app
        .post_as(
            &format!("/v1/files/{theirs}/confirm"),
            json!({}),
            &other_token,
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    testkit::wait_until(PROCESSING, || async {
        app.get_as(&format!("/v1/files/{theirs}"), &other_token)
            .await
            .map(|(_, file)| file["status"] == "ready")
            .unwrap_or(false)
    })
    .await
    .unwrap();
    assert_eq!(endpoint.requests(), requests_after_first + 1);
}

#[tokio::test]
async fn a_worker_stopping_during_a_long_poll_gives_back_what_it_received() {
    // A long visibility timeout makes a hidden message obvious: it would wait 60 s.
    let app = TestApp::spawn_with(testkit::TestOptions {
        visibility_timeout_secs: 60,
        ..testkit::TestOptions::default()
    })
    .await
    .unwrap();
    let mut stopping = app
        .spawn_worker(WORKER, &[("GLASSBOX_FILES_WORKER__RECEIVE_WAIT_SECS", "8")])
        .unwrap();
    testkit::wait_until(Duration::from_secs(60), || async {
        stopping.metrics().await.is_ok()
    })
    .await
    .expect("the worker is up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let terminated = tokio::spawn(async move {
        let exit = stopping.terminate(Duration::from_secs(20)).await;
        (stopping, exit)
    });
    // Arrives while the stopping worker is still inside its long poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = app
        .upload(
            "late.txt",
            "text/plain",
            b"Sent while the only worker was stopping.".to_vec(),
        )
        .await
        .unwrap();
    let (_stopped, exit) = terminated.await.unwrap();
    assert!(exit.unwrap().success());
    let _next = app.spawn_worker(WORKER, &[]).unwrap();
    let file = app
        .wait_for_file(id, &["ready"], Duration::from_secs(40))
        .await
        .unwrap();
    assert_eq!(file["attempts"], 1, "{file}");
}
