//! Every transition of `shared::files`, and every illegal one, against Postgres: the row
//! it leaves, its event row, and its outbox entry (or their absence).

use std::time::Duration;

use serde_json::{Value, json};
use shared::error::JobError;
use shared::files::{self, FileStatus, NewFile, Stored};
use shared::lease::{Claim, LAST_ATTEMPT_LOST, Receipt, Stalled};
use shared::worker::Disposition;
use sqlx::PgPool;
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(60);

/// A first receive of message `message_id` (`last`: its last allowed one).
fn message(message_id: &str, last: bool) -> Receipt<'_> {
    Receipt {
        message_id,
        last_receive: last,
    }
}

async fn database() -> testkit::FreshDatabase {
    testkit::fresh_database().await.expect("a fresh database")
}

/// A file of a fresh org, awaiting its upload.
async fn new_file(pool: &PgPool) -> (Uuid, Uuid) {
    let (id, org_id) = (Uuid::now_v7(), Uuid::now_v7());
    let mut connection = pool.acquire().await.unwrap();
    files::create(
        &mut connection,
        &NewFile {
            id,
            org_id,
            name: "a.txt",
            content_type: "text/plain",
            size_bytes: 3,
            object_key: "k",
            metadata: &serde_json::json!({}),
        },
    )
    .await
    .unwrap();
    (id, org_id)
}

/// A file moved straight to `status` (test setup only).
async fn file_in(pool: &PgPool, status: &str) -> (Uuid, Uuid) {
    let (id, org_id) = new_file(pool).await;
    sqlx::query("UPDATE files SET status = $2, queued_at = now() WHERE id = $1")
        .bind(id)
        .bind(status)
        .execute(pool)
        .await
        .unwrap();
    (id, org_id)
}

async fn status(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM files WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn events(pool: &PgPool, id: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT kind FROM file_events WHERE file_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The outbox bodies naming the file.
async fn outbox(pool: &PgPool, id: Uuid) -> Vec<(String, Value)> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT queue, body FROM outbox WHERE body LIKE '%' || $1 || '%' ORDER BY id",
    )
    .bind(id.to_string())
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(queue, body)| (queue, serde_json::from_str(&body).unwrap()))
        .collect()
}

async fn expire_lease(pool: &PgPool, id: Uuid) {
    sqlx::query("UPDATE files SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

async fn claimed(pool: &PgPool, id: Uuid, org_id: Uuid, last_receive: bool) -> Uuid {
    match files::claim(pool, id, org_id, LEASE, message("m-1", last_receive))
        .await
        .unwrap()
    {
        Claim::Acquired { lease, .. } => lease,
        other => panic!("expected a lease, got {other:?}"),
    }
}

fn stored() -> Stored<'static> {
    Stored {
        detected_type: "text",
        pages: 1,
        chunk_count: 2,
        embedding_model: "m",
        extractor_version: 1,
        content_sha256: "abc",
        stage_durations_ms: json!({ "store": 1 }),
        extraction_engine: "text",
    }
}

#[tokio::test]
async fn the_status_enum_mirrors_the_check_list() {
    let database = database().await;
    let pool = database.pool.clone();
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'files'::regclass AND conname = 'files_status_check'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut in_check: Vec<&str> = definition.split('\'').skip(1).step_by(2).collect();
    in_check.sort_unstable();
    let mut in_enum = FileStatus::names();
    in_enum.sort_unstable();
    assert_eq!(in_check, in_enum, "{definition}");
    for status in FileStatus::ALL {
        assert_eq!(FileStatus::from_name(status.as_str()), Some(status));
    }
}

#[tokio::test]
async fn an_upload_is_queued_once_with_one_message() {
    let database = database().await;
    let pool = database.pool.clone();
    let (id, org_id) = new_file(&pool).await;
    assert_eq!(status(&pool, id).await, "awaiting_upload");
    let mut connection = pool.acquire().await.unwrap();
    assert!(
        !files::queue_uploaded(&mut connection, id, Uuid::now_v7())
            .await
            .unwrap(),
        "another org cannot confirm it"
    );
    assert!(
        files::queue_uploaded(&mut connection, id, org_id)
            .await
            .unwrap()
    );
    assert!(
        !files::queue_uploaded(&mut connection, id, org_id)
            .await
            .unwrap(),
        "queued → queued is refused"
    );
    assert_eq!(status(&pool, id).await, "queued");
    assert_eq!(events(&pool, id).await, ["created", "queued"]);
    let messages = outbox(&pool, id).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].0, "file-jobs", "the kind picks the queue");
    assert_eq!(messages[0].1["kind"], "file.process");
    assert_eq!(messages[0].1["org_id"], org_id.to_string());
}

#[tokio::test]
async fn claims_take_waiting_files_and_refuse_the_rest() {
    let database = database().await;
    let pool = database.pool.clone();
    for waiting in ["queued", "retrying", "dead_lettered"] {
        let (id, org_id) = file_in(&pool, waiting).await;
        let lease = claimed(&pool, id, org_id, false).await;
        assert_eq!(status(&pool, id).await, "processing", "from {waiting}");
        let (token, attempts, last_receive): (Option<Uuid>, i32, bool) =
            sqlx::query_as("SELECT lease_token, attempts, last_receive FROM files WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!((token, attempts, last_receive), (Some(lease), 1, false));
        let from: Value = sqlx::query_scalar(
            "SELECT data FROM file_events WHERE file_id = $1 AND kind = 'claimed'",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(from["from"], waiting);
        assert_eq!(
            files::claim(&pool, id, org_id, LEASE, message("m-2", false))
                .await
                .unwrap(),
            Claim::Duplicate,
            "a live lease makes a second message a duplicate"
        );
        match files::claim(&pool, id, org_id, LEASE, message("m-1", false))
            .await
            .unwrap()
        {
            Claim::Busy { retry_after } => assert!(
                retry_after > Duration::from_secs(50) && retry_after <= Duration::from_secs(61),
                "the holder's own message waits for the lease: {retry_after:?}"
            ),
            other => panic!("expected Busy, got {other:?}"),
        }
        expire_lease(&pool, id).await;
        let (_, attempt) = match files::claim(&pool, id, org_id, LEASE, message("m-1", true))
            .await
            .unwrap()
        {
            Claim::Acquired { lease, attempt } => (lease, attempt),
            other => panic!("an expired lease is taken over, got {other:?}"),
        };
        assert_eq!(attempt, 2);
    }
    for settled in ["awaiting_upload", "ready", "failed"] {
        let (id, org_id) = file_in(&pool, settled).await;
        assert_eq!(
            files::claim(&pool, id, org_id, LEASE, message("m-1", false))
                .await
                .unwrap(),
            Claim::Finished,
            "{settled} cannot be claimed"
        );
        assert_eq!(status(&pool, id).await, settled);
        assert_eq!(events(&pool, id).await, ["created"], "nothing recorded");
    }
    let (id, _) = file_in(&pool, "queued").await;
    assert_eq!(
        files::claim(&pool, id, Uuid::now_v7(), LEASE, message("m-1", false))
            .await
            .unwrap(),
        Claim::Finished,
        "another org's message claims nothing"
    );
}

#[tokio::test]
async fn only_the_lease_holder_stores_and_marks_ready() {
    let database = database().await;
    let pool = database.pool.clone();
    let (id, org_id) = file_in(&pool, "queued").await;
    let lease = claimed(&pool, id, org_id, false).await;
    let stranger = Uuid::new_v4();
    assert!(
        !files::enter_stage(&pool, id, stranger, "extract", &json!({}))
            .await
            .unwrap()
    );
    assert!(
        files::enter_stage(&pool, id, lease, "extract", &json!({ "download": 3 }))
            .await
            .unwrap()
    );
    let mut transaction = pool.begin().await.unwrap();
    assert!(!files::fence(&mut transaction, id, stranger).await.unwrap());
    assert!(
        !files::mark_ready(&mut transaction, id, stranger, &stored())
            .await
            .unwrap()
    );
    transaction.rollback().await.unwrap();
    let mut transaction = pool.begin().await.unwrap();
    assert!(files::fence(&mut transaction, id, lease).await.unwrap());
    assert!(
        files::mark_ready(&mut transaction, id, lease, &stored())
            .await
            .unwrap()
    );
    transaction.commit().await.unwrap();
    let (status_now, chunks, token, finished): (String, Option<i32>, Option<Uuid>, bool) = sqlx::query_as(
        "SELECT status, chunk_count, lease_token, finished_at IS NOT NULL FROM files WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status_now.as_str(), chunks, token, finished),
        ("ready", Some(2), None, true)
    );
    assert_eq!(events(&pool, id).await, ["created", "claimed", "ready"]);
    let mut transaction = pool.begin().await.unwrap();
    assert!(
        !files::mark_ready(&mut transaction, id, lease, &stored())
            .await
            .unwrap(),
        "ready → ready is refused: the lease is gone"
    );
}

#[tokio::test]
async fn failures_record_their_disposition_under_the_lease_only() {
    let database = database().await;
    let pool = database.pool.clone();
    let error = JobError::transient("embedding_unavailable", "503");
    let cases = [
        (Disposition::Failed, "failed", "failed"),
        (
            Disposition::Retrying {
                delay: Duration::from_secs(30),
            },
            "retrying",
            "retrying",
        ),
        (Disposition::DeadLettered, "dead_lettered", "dead_lettered"),
    ];
    for (disposition, expected_status, event) in cases {
        let (id, org_id) = file_in(&pool, "queued").await;
        let lease = claimed(&pool, id, org_id, false).await;
        assert!(
            !files::record_failure(&pool, id, Uuid::new_v4(), &error, disposition)
                .await
                .unwrap(),
            "a stale lease records nothing"
        );
        assert!(
            files::record_failure(&pool, id, lease, &error, disposition)
                .await
                .unwrap()
        );
        let (status_now, code, token, due_later, finished): (String, Option<String>, Option<Uuid>, bool, bool) =
            sqlx::query_as(
                "SELECT status, error_code, lease_token, queued_at > now() + interval '20 seconds', finished_at IS NOT NULL FROM files WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(status_now, expected_status);
        assert_eq!(code.as_deref(), Some("embedding_unavailable"));
        assert_eq!(token, None);
        let retrying = expected_status == "retrying";
        assert_eq!(due_later, retrying, "a retry is due when its backoff ends");
        assert_eq!(finished, !retrying);
        assert_eq!(
            events(&pool, id).await.last().map(String::as_str),
            Some(event)
        );
        assert!(
            !files::record_failure(&pool, id, lease, &error, disposition)
                .await
                .unwrap(),
            "a second failure of the same attempt is refused"
        );
        assert!(
            outbox(&pool, id).await.is_empty(),
            "the message itself comes back"
        );
    }
}

#[tokio::test]
async fn a_release_puts_the_file_back_on_the_queue_without_a_new_message() {
    let database = database().await;
    let pool = database.pool.clone();
    let (id, org_id) = file_in(&pool, "queued").await;
    let lease = claimed(&pool, id, org_id, false).await;
    assert!(!files::release(&pool, id, Uuid::new_v4()).await.unwrap());
    assert!(files::release(&pool, id, lease).await.unwrap());
    assert_eq!(status(&pool, id).await, "queued");
    assert!(
        !files::release(&pool, id, lease).await.unwrap(),
        "released once"
    );
    assert_eq!(events(&pool, id).await, ["created", "claimed", "released"]);
    assert!(outbox(&pool, id).await.is_empty());
}

#[tokio::test]
async fn stalled_files_are_requeued_or_dead_lettered_and_healthy_ones_left_alone() {
    let database = database().await;
    let pool = database.pool.clone();
    let waiting = file_in(&pool, "queued").await;
    let lost_retry = file_in(&pool, "retrying").await;
    let crashed = file_in(&pool, "queued").await;
    claimed(&pool, crashed.0, crashed.1, false).await;
    expire_lease(&pool, crashed.0).await;
    let crashed_on_last = file_in(&pool, "queued").await;
    claimed(&pool, crashed_on_last.0, crashed_on_last.1, true).await;
    expire_lease(&pool, crashed_on_last.0).await;
    let healthy = file_in(&pool, "queued").await;
    claimed(&pool, healthy.0, healthy.1, true).await;
    let backing_off = file_in(&pool, "queued").await;
    let lease = claimed(&pool, backing_off.0, backing_off.1, false).await;
    let error = JobError::transient("s3_unavailable", "503");
    let retry_later = Disposition::Retrying {
        delay: Duration::from_secs(600),
    };
    files::record_failure(&pool, backing_off.0, lease, &error, retry_later)
        .await
        .unwrap();
    let done = file_in(&pool, "ready").await;

    let mut transaction = pool.begin().await.unwrap();
    let mut found = files::lock_stalled(&mut transaction, Duration::ZERO, 100)
        .await
        .unwrap();
    found.sort();
    let mut expected = vec![waiting.0, lost_retry.0, crashed.0, crashed_on_last.0];
    expected.sort();
    assert_eq!(found, expected, "a backoff still running is not stalled");
    transaction.rollback().await.unwrap();

    let mut connection = pool.acquire().await.unwrap();
    let mut requeue = async |id: Uuid| {
        files::requeue_stalled(&mut connection, id, "test")
            .await
            .unwrap()
    };
    assert_eq!(requeue(waiting.0).await, Stalled::Requeued);
    assert_eq!(requeue(lost_retry.0).await, Stalled::Requeued);
    assert_eq!(requeue(crashed.0).await, Stalled::Requeued);
    assert_eq!(requeue(crashed_on_last.0).await, Stalled::DeadLettered);
    assert_eq!(requeue(healthy.0).await, Stalled::NotStalled);
    assert_eq!(requeue(done.0).await, Stalled::NotStalled);
    assert_eq!(requeue(Uuid::now_v7()).await, Stalled::NotStalled);

    for requeued in [waiting.0, lost_retry.0, crashed.0] {
        assert_eq!(status(&pool, requeued).await, "queued");
        assert_eq!(outbox(&pool, requeued).await.len(), 1);
        assert_eq!(events(&pool, requeued).await.last().unwrap(), "requeued");
    }
    assert_eq!(status(&pool, crashed_on_last.0).await, "dead_lettered");
    assert!(
        outbox(&pool, crashed_on_last.0).await.is_empty(),
        "nothing past maxReceiveCount"
    );
    let code: Option<String> = sqlx::query_scalar("SELECT error_code FROM files WHERE id = $1")
        .bind(crashed_on_last.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(code.as_deref(), Some(LAST_ATTEMPT_LOST));
    assert_eq!(status(&pool, healthy.0).await, "processing");
    assert!(outbox(&pool, healthy.0).await.is_empty());

    let stuck: Vec<Uuid> = files::stuck(&pool, Duration::ZERO, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|file| file.id)
        .collect();
    assert!(!stuck.contains(&healthy.0) && !stuck.contains(&backing_off.0));
}

#[tokio::test]
async fn reprocess_and_redrive_reopen_only_finished_files() {
    let database = database().await;
    let pool = database.pool.clone();
    let mut connection = pool.acquire().await.unwrap();
    for finished in ["ready", "failed", "dead_lettered"] {
        let (id, org_id) = file_in(&pool, finished).await;
        assert!(
            !files::reprocess(&mut connection, id, Uuid::now_v7(), "bob")
                .await
                .unwrap(),
            "another org's file"
        );
        assert!(
            files::reprocess(&mut connection, id, org_id, "bob")
                .await
                .unwrap()
        );
        assert_eq!(status(&pool, id).await, "queued");
        assert_eq!(outbox(&pool, id).await.len(), 1);
        assert_eq!(events(&pool, id).await.last().unwrap(), "reprocessed");
    }
    for unfinished in ["awaiting_upload", "queued", "processing", "retrying"] {
        let (id, org_id) = file_in(&pool, unfinished).await;
        assert!(
            !files::reprocess(&mut connection, id, org_id, "bob")
                .await
                .unwrap()
        );
        assert_eq!(status(&pool, id).await, unfinished);
    }

    let (dead, _) = file_in(&pool, "dead_lettered").await;
    assert!(
        files::reopen_dead_lettered(&mut connection, dead, "alice")
            .await
            .unwrap()
    );
    assert_eq!(status(&pool, dead).await, "queued");
    assert!(
        outbox(&pool, dead).await.is_empty(),
        "the moved message is the wake-up"
    );
    assert_eq!(events(&pool, dead).await.last().unwrap(), "redriven");
    for not_dead in ["failed", "ready", "queued"] {
        let (id, _) = file_in(&pool, not_dead).await;
        assert!(
            !files::reopen_dead_lettered(&mut connection, id, "alice")
                .await
                .unwrap()
        );
        assert_eq!(status(&pool, id).await, not_dead);
    }

    let (gone, org_id) = file_in(&pool, "ready").await;
    assert!(
        !files::delete(&mut connection, gone, Uuid::now_v7())
            .await
            .unwrap()
    );
    assert!(files::delete(&mut connection, gone, org_id).await.unwrap());
    assert!(
        events(&pool, gone).await.is_empty(),
        "events go with the file"
    );
}
