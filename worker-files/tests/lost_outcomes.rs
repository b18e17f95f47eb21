//! Files whose message or outcome went missing: the sweeper and the stuck view find
//! them, re-enqueue what may run again, and dead-letter what SQS already gave up on.

use std::time::Duration;

use testkit::scripted::{EmbeddingReply, ScriptedEmbeddings};
use testkit::{TestApp, TestOptions, wait_until};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-files");
const PROCESSING: Duration = Duration::from_secs(60);

async fn status_of(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM files WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn outbox_entries(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Receives and deletes every message on the file queue: a lost message.
async fn lose_every_message(app: &TestApp) {
    for _ in 0..3 {
        for delivery in app.queue.receive(10, Duration::from_secs(1)).await.unwrap() {
            app.queue.delete(&delivery).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_retrying_file_whose_message_was_lost_is_shown_stuck_and_re_enqueued() {
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 5,
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
                ("GLASSBOX_EMBEDDING__MAX_RETRIES", "0"),
            ],
        )
        .unwrap();
    let id = app
        .upload(
            "flaky.txt",
            "text/plain",
            b"An endpoint that is down.".to_vec(),
        )
        .await
        .unwrap();
    app.wait_for_file(id, &["retrying"], PROCESSING)
        .await
        .unwrap();
    // The worker goes away and the message with it: nothing will wake the file up.
    worker.kill().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    lose_every_message(&app).await;
    assert_eq!(status_of(&app, id).await, "retrying");

    let ops = app.ops_token("dave");
    let (status, body) = app
        .get_as("/v1/ops/stuck?queued_for_secs=0", &ops)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|job| job["id"] == id.to_string()),
        "the stranded file shows as stuck: {body}"
    );
    let requeued = api_lite::sweeper::sweep_once(&app.pool, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(requeued, 1, "the sweeper re-enqueues the stranded file");
    wait_until(Duration::from_secs(10), || async {
        app.queue
            .depth()
            .await
            .is_ok_and(|depth| depth.visible == 1)
    })
    .await
    .expect("a fresh message is on the queue");
}

#[tokio::test]
async fn a_last_attempt_that_recorded_no_outcome_is_dead_lettered_not_retried() {
    // One allowed receive: the first attempt is also the last.
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 1,
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let mut doomed = app
        .spawn_worker(
            WORKER,
            &[("GLASSBOX_FILES_WORKER__FAILPOINT", "before_store")],
        )
        .unwrap();
    let id = app
        .upload(
            "last.txt",
            "text/plain",
            b"The last allowed attempt.".to_vec(),
        )
        .await
        .unwrap();
    wait_until(PROCESSING, || async {
        app.get(&format!("/v1/files/{id}"))
            .await
            .map(|(_, file)| file["stage"] == "store")
            .unwrap_or(false)
    })
    .await
    .expect("the worker reaches the store stage");
    // The worker dies before it can record anything, as when the write of its outcome
    // fails: the row still says processing, and SQS dead-letters the message.
    doomed.kill().await.unwrap();
    wait_until(Duration::from_secs(15), || async {
        sqlx::query_scalar::<_, bool>("SELECT lease_expires_at < now() FROM files WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap_or(false)
    })
    .await
    .unwrap();
    assert_eq!(outbox_entries(&app).await, 0);

    api_lite::sweeper::sweep_once(&app.pool, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        status_of(&app, id).await,
        "dead_lettered",
        "the sweeper records what SQS did with the last allowed receive"
    );
    assert_eq!(
        outbox_entries(&app).await,
        0,
        "no fresh message past maxReceiveCount"
    );
    let (_, file) = app.get(&format!("/v1/files/{id}")).await.unwrap();
    assert_eq!(file["error_class"], "transient", "{file}");
}
