//! Webhooks against the real stack, with a receiver on loopback: one signed delivery per
//! event, retries that end in exactly one success with the same id, a receiver down past
//! the retry window shown as failed and redelivered by ops, and SSRF targets refused
//! both at registration and at connection time.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use shared::error::JobError;
use shared::files::{self, NewFile};
use shared::lease::{Claim, Receipt};
use shared::webhooks::signing;
use shared::worker::Disposition;
use testkit::webhook_receiver::{Received, WebhookReceiver};
use testkit::{TestApp, TestOptions};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

async fn app_with(
    configure: impl Fn(&mut shared::config::Settings) + Send + Sync + 'static,
) -> TestApp {
    TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(move |settings| {
            settings.api.scheduler_enabled = false;
            settings.webhooks.allow_loopback = true;
            settings.webhooks.first_retry_ms = 100;
            settings.webhooks.max_retry_delay_secs = 1;
            settings.webhooks.poll_ms = 100;
            settings.webhooks.timeout_ms = 2_000;
            configure(settings);
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap()
}

async fn register(app: &TestApp, url: &str, events: &[&str]) -> (Uuid, String) {
    let (status, created) = app
        .post("/v1/webhooks", json!({ "url": url, "event_types": events }))
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    (created["id"].as_str().unwrap().parse().unwrap(), secret)
}

/// Starts an execution and cancels it while queued (no agent worker runs): the
/// `execution.cancelled` event, through the API alone.
async fn cancel_an_execution(app: &TestApp) -> Uuid {
    let node = app.create_node("hook", "say hi", json!({})).await.unwrap();
    let (status, execution) = app.execute(node, None, json!({})).await.unwrap();
    assert_eq!(status, 202, "{execution}");
    let id: Uuid = execution["id"].as_str().unwrap().parse().unwrap();
    let (status, cancelled) = app
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    id
}

/// A file of the app's org taken through the lifecycle to a failure of `disposition`.
async fn fail_a_file(app: &TestApp, disposition: Disposition) -> Uuid {
    let id = Uuid::now_v7();
    let mut connection = app.pool.acquire().await.unwrap();
    files::create(
        &mut connection,
        &NewFile {
            id,
            org_id: app.org_id,
            name: "a.txt",
            content_type: "text/plain",
            size_bytes: 1,
            object_key: "orgs/x/files/y",
            metadata: &serde_json::json!({}),
        },
    )
    .await
    .unwrap();
    assert!(
        files::queue_uploaded(&mut connection, id, app.org_id)
            .await
            .unwrap()
    );
    drop(connection);
    let receipt = Receipt {
        message_id: "m-1",
        last_receive: false,
    };
    let Claim::Acquired { lease, .. } =
        files::claim(&app.pool, id, app.org_id, Duration::from_secs(30), receipt)
            .await
            .unwrap()
    else {
        panic!("the file was not claimed");
    };
    let error = JobError::permanent("unreadable", "the file cannot be read");
    assert!(
        files::record_failure(&app.pool, id, lease, &error, disposition)
            .await
            .unwrap()
    );
    id
}

fn verify(received: &Received, secret: &str) -> Result<(), signing::VerifyError> {
    signing::verify(
        secret,
        &received.id,
        received.timestamp.parse().unwrap(),
        &received.body,
        &received.signature,
        chrono::Utc::now().timestamp(),
        300,
    )
}

async fn deliveries(app: &TestApp, webhook: Uuid) -> Vec<Value> {
    let (status, page) = app
        .get(&format!("/v1/webhooks/{webhook}/deliveries"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{page}");
    page["deliveries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn each_subscribed_event_arrives_once_signed_and_rotation_keeps_the_old_secret_valid() {
    let receiver = WebhookReceiver::start(Vec::new()).await.unwrap();
    let app = app_with(|_| {}).await;
    let (webhook, secret) = register(
        &app,
        &receiver.url(),
        &["execution.cancelled", "file.failed"],
    )
    .await;

    let (status, listed) = app.get("/v1/webhooks").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(listed["webhooks"][0]["id"], webhook.to_string());
    assert!(
        !listed.to_string().contains("whsec_"),
        "a listing shows a secret: {listed}"
    );
    let other_org = app.token_for(Uuid::now_v7());
    let (status, _) = app
        .get_as(&format!("/v1/webhooks/{webhook}"), &other_org)
        .await
        .unwrap();
    assert_eq!(status, 404, "another org sees the endpoint");

    let execution = cancel_an_execution(&app).await;
    let failed_file = fail_a_file(&app, Disposition::Failed).await;
    // Not subscribed: no delivery.
    fail_a_file(&app, Disposition::DeadLettered).await;

    let received = receiver.wait_for(2, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received = {
        let again = receiver.received();
        assert_eq!(
            again.len(),
            2,
            "more than one delivery per event: {:?}",
            again.iter().map(|r| r.json()).collect::<Vec<_>>()
        );
        let _ = received;
        again
    };
    for message in &received {
        verify(message, &secret).expect("a valid Standard Webhooks signature");
        assert!(message.id.starts_with("msg_"));
        assert_eq!(message.answered, 200);
    }
    assert_ne!(received[0].id, received[1].id);
    let by_type = |kind: &str| {
        received
            .iter()
            .map(Received::json)
            .find(|body| body["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event"))
    };
    let cancelled = by_type("execution.cancelled");
    assert_eq!(cancelled["data"]["execution_id"], execution.to_string());
    assert_eq!(cancelled["data"]["status"], "cancelled");
    assert!(cancelled["timestamp"].as_str().is_some());
    let failed = by_type("file.failed");
    assert_eq!(failed["data"]["file_id"], failed_file.to_string());
    assert_eq!(failed["data"]["error_code"], "unreadable");

    let recorded = deliveries(&app, webhook).await;
    assert_eq!(recorded.len(), 2);
    assert!(
        recorded
            .iter()
            .all(|delivery| delivery["status"] == "delivered" && delivery["attempts"] == 1)
    );

    // Rotation: the new secret signs, and the old one still does during the grace.
    let (status, rotated) = app
        .post(&format!("/v1/webhooks/{webhook}/rotate-secret"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    assert!(rotated["previous_secret_expires_at"].as_str().is_some());
    cancel_an_execution(&app).await;
    let received = receiver.wait_for(3, WAIT).await.unwrap();
    let third = &received[2];
    verify(third, &new_secret).expect("the new secret verifies");
    verify(third, &secret).expect("the old secret still verifies during the grace");

    let (status, _) = app
        .http
        .delete(app.url(&format!("/v1/webhooks/{webhook}")))
        .bearer_auth(&app.token)
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 204);
    cancel_an_execution(&app).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "a deleted endpoint still gets events"
    );
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_event_exactly_once_with_the_same_id() {
    // A 5xx, then a redirect (never followed), then 200.
    let receiver = WebhookReceiver::start(vec![500, 307]).await.unwrap();
    let app = app_with(|_| {}).await;
    let (webhook, secret) = register(&app, &receiver.url(), &["execution.cancelled"]).await;
    cancel_an_execution(&app).await;

    let received = receiver.wait_for(3, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received_after = receiver.received();
    assert_eq!(received_after.len(), 3, "delivered again after a success");
    assert_eq!(
        received
            .iter()
            .map(|message| message.answered)
            .collect::<Vec<_>>(),
        vec![500, 307, 200]
    );
    assert!(
        received.iter().all(|message| message.id == received[0].id),
        "the id changed between attempts"
    );
    assert!(
        received
            .iter()
            .all(|message| message.body == received[0].body),
        "the body changed between attempts"
    );
    for message in &received {
        verify(message, &secret).unwrap();
    }
    let recorded = deliveries(&app, webhook).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0]["status"], "delivered");
    assert_eq!(recorded[0]["attempts"], 3);
    assert_eq!(recorded[0]["event_id"], received[0].id);
}

#[tokio::test]
async fn a_receiver_down_past_the_retry_window_is_failed_and_ops_can_redeliver() {
    let receiver = WebhookReceiver::start_down().await.unwrap();
    let app = app_with(|settings| settings.webhooks.retry_window_secs = 2).await;
    let (_, secret) = register(&app, &receiver.url(), &["execution.cancelled"]).await;
    cancel_an_execution(&app).await;

    let ops = app.ops_token("oncall");
    let started = std::time::Instant::now();
    let failed = loop {
        let (status, page) = app
            .get_as("/v1/ops/webhooks/deliveries?status=failed", &ops)
            .await
            .unwrap();
        assert_eq!(status, 200, "{page}");
        if let Some(delivery) = page["deliveries"].as_array().unwrap().first() {
            break delivery.clone();
        }
        assert!(started.elapsed() < WAIT, "the delivery never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failed["attempts"].as_i64().unwrap() >= 2, "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("connect"),
        "{failed}"
    );
    assert!(receiver.received().is_empty());

    // A tenant cannot use the ops routes.
    let (status, _) = app
        .post(
            &format!("/v1/ops/webhooks/deliveries/{}/redeliver", failed["id"]),
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 403);

    receiver.restart().await.unwrap();
    let (status, redelivered) = app
        .post_as(
            &format!("/v1/ops/webhooks/deliveries/{}/redeliver", failed["id"]),
            json!({}),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{redelivered}");
    assert_eq!(redelivered["delivery"]["status"], "pending");
    let received = receiver.wait_for(1, WAIT).await.unwrap();
    assert_eq!(
        received[0].id,
        failed["event_id"].as_str().unwrap(),
        "redelivery changed the id"
    );
    verify(&received[0], &secret).unwrap();

    let started = std::time::Instant::now();
    loop {
        let (_, page) = app
            .get_as("/v1/ops/webhooks/deliveries?status=delivered", &ops)
            .await
            .unwrap();
        if page["deliveries"].as_array().unwrap().len() == 1 {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the redelivery was not recorded as delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, again) = app
        .post_as(
            &format!("/v1/ops/webhooks/deliveries/{}/redeliver", failed["id"]),
            json!({}),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{again}");
    assert_eq!(again["error"]["code"], "not_failed");
    let (_, audit) = app
        .get_as("/v1/ops/audit?action=webhook.redeliver", &ops)
        .await
        .unwrap();
    assert_eq!(audit["entries"][0]["actor"], "oncall", "{audit}");
}

#[tokio::test]
async fn ssrf_targets_are_refused_at_registration_and_at_connection() {
    let receiver = WebhookReceiver::start(Vec::new()).await.unwrap();
    let app = app_with(|settings| {
        settings.webhooks.allow_loopback = false;
        settings.webhooks.retry_window_secs = 1;
    })
    .await;
    for url in [
        receiver.url(),
        format!("http://localhost:{}/hook", receiver.address.port()),
        "http://[::1]/hook".to_string(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/hook".to_string(),
        "http://192.168.0.1/hook".to_string(),
        "http://[::ffff:127.0.0.1]/hook".to_string(),
        "ftp://example.com/hook".to_string(),
        "http://user:pass@example.com/hook".to_string(),
    ] {
        let (status, refused) = app
            .post(
                "/v1/webhooks",
                json!({ "url": url, "event_types": ["execution.cancelled"] }),
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{url} was accepted: {refused}");
        assert_eq!(
            refused["error"]["code"], "webhook_target_refused",
            "{refused}"
        );
    }
    let (status, refused) = app
        .post(
            "/v1/webhooks",
            json!({ "url": "https://example.com/", "event_types": ["file.nope"] }),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{refused}");

    // An endpoint row pointing at loopback (written behind the API's back, as a DNS
    // change would make it): the dispatcher refuses to connect.
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, org_id, url, event_types, secret) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(app.org_id)
    .bind(receiver.url())
    .bind(vec!["execution.cancelled"])
    .bind(signing::new_secret())
    .execute(&app.pool)
    .await
    .unwrap();
    cancel_an_execution(&app).await;
    let started = std::time::Instant::now();
    let error: String = loop {
        let failed: Option<String> =
            sqlx::query_scalar("SELECT last_error FROM webhook_deliveries WHERE status = 'failed'")
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        if let Some(error) = failed {
            break error;
        }
        assert!(started.elapsed() < WAIT, "the delivery never failed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(error.contains("not a public address"), "{error}");
    assert!(
        receiver.received().is_empty(),
        "the dispatcher connected to loopback"
    );
}
