//! The files API without a worker: auth, validation, confirm checks, paging, errors.

use serde_json::json;
use testkit::TestApp;

#[tokio::test]
async fn health_is_open_and_ready_checks_every_dependency() {
    let app = TestApp::spawn().await.unwrap();
    let response = app.http.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let response = app.http.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["checks"],
        json!({ "postgres": true, "sqs": true, "s3": true })
    );
    // Prometheus text is on the internal listener only, never on the public one.
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status().as_u16(), 404);
    let internal = app
        .http
        .get(format!("http://{}/metrics", app.metrics_address))
        .send()
        .await
        .unwrap();
    assert_eq!(internal.status().as_u16(), 200);
    let internal_health = app
        .http
        .get(format!("http://{}/health", app.metrics_address))
        .send()
        .await
        .unwrap();
    assert_eq!(internal_health.status().as_u16(), 200);
}

#[tokio::test]
async fn every_v1_route_needs_a_valid_token() {
    let app = TestApp::spawn().await.unwrap();
    for (method, path) in [
        ("GET", "/v1/files"),
        ("POST", "/v1/files"),
        ("POST", "/v1/search"),
        ("GET", "/v1/files/00000000-0000-0000-0000-000000000000"),
    ] {
        let request = app
            .http
            .request(method.parse().unwrap(), app.url(path))
            .json(&json!({}));
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401, "{method} {path}");
        assert!(response.headers().contains_key("x-request-id"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let (status, _) = app.get_as("/v1/files", "not-a-jwt").await.unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn create_validates_name_type_and_size() {
    let app = TestApp::spawn().await.unwrap();
    let (status, body) = app
        .post(
            "/v1/files",
            json!({ "name": "a.exe", "content_type": "application/x-msdownload", "size": 10 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "unsupported_type");
    let (status, body) = app
        .post(
            "/v1/files",
            json!({ "name": "big.pdf", "content_type": "application/pdf", "size": 1u64 << 40 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "too_large");
    let (status, body) = app
        .post(
            "/v1/files",
            json!({ "name": "", "content_type": "text/plain", "size": 1 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    let (status, body) = app
        .post(
            "/v1/files",
            json!({ "name": "x.txt", "content_type": "text/plain" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "missing size: {body}");
    assert_eq!(body["error"]["code"], "invalid_request");
}

#[tokio::test]
async fn confirm_checks_the_object_exists_and_matches_the_declared_size() {
    let app = TestApp::spawn().await.unwrap();
    let (status, created) = app
        .post(
            "/v1/files",
            json!({ "name": "n.txt", "content_type": "text/plain", "size": 5 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap();
    let (status, body) = app
        .post(&format!("/v1/files/{id}/confirm"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "upload_missing");

    let url = created["upload"]["url"].as_str().unwrap();
    let put = app
        .http
        .put(url)
        .header("content-type", "text/plain")
        .body("too many bytes")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let (status, body) = app
        .post(&format!("/v1/files/{id}/confirm"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "size_mismatch");
    let (_, file) = app.get(&format!("/v1/files/{id}")).await.unwrap();
    assert_eq!(file["status"], "awaiting_upload");
}

#[tokio::test]
async fn confirm_enqueues_exactly_one_message_through_the_outbox() {
    let app = TestApp::spawn().await.unwrap();
    let id = app
        .upload("q.txt", "text/plain", b"queued".to_vec())
        .await
        .unwrap();
    // Confirming again is harmless and enqueues nothing more.
    let (status, file) = app
        .post(&format!("/v1/files/{id}/confirm"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(file["status"], "queued");
    testkit::wait_until(std::time::Duration::from_secs(10), || async {
        let (pending,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        pending == 0
    })
    .await
    .expect("the relay empties the outbox");
    let received = app
        .queue
        .receive(10, std::time::Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(received.len(), 1);
    let message = shared::queue::JobMessage::parse(&received[0].body).unwrap();
    assert_eq!(message.job_id.to_string(), id.to_string());
    assert_eq!(message.org_id, app.org_id);
}

#[tokio::test]
async fn list_pages_with_a_cursor_and_filters_by_status() {
    let app = TestApp::spawn().await.unwrap();
    for index in 0..5 {
        let (status, _) = app
            .post(
                "/v1/files",
                json!({ "name": format!("f{index}.txt"), "content_type": "text/plain", "size": 3 }),
            )
            .await
            .unwrap();
        assert_eq!(status, 201);
    }
    let queued = app
        .upload("queued.txt", "text/plain", b"abc".to_vec())
        .await
        .unwrap();
    let (_, page) = app.get("/v1/files?limit=4").await.unwrap();
    assert_eq!(page["files"].as_array().unwrap().len(), 4);
    assert_eq!(page["files"][0]["id"], queued.to_string(), "newest first");
    let cursor = page["next_cursor"].as_str().expect("more pages");
    let (_, rest) = app
        .get(&format!("/v1/files?limit=4&cursor={cursor}"))
        .await
        .unwrap();
    assert_eq!(rest["files"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    let (_, filtered) = app.get("/v1/files?status=queued").await.unwrap();
    assert_eq!(filtered["files"].as_array().unwrap().len(), 1);
    let (status, body) = app.get("/v1/files?status=bogus").await.unwrap();
    assert_eq!(status, 422, "{body}");
    let (status, _) = app.get("/v1/files/not-a-uuid").await.unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn readiness_is_reused_for_a_second() {
    let app = TestApp::spawn().await.unwrap();
    let ready = || async {
        let response = app.http.get(app.url("/ready")).send().await.unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (status, body)
    };
    let (status, _) = ready().await;
    assert_eq!(status, 200);
    // S3 goes away: the cached answer stands for the rest of the second...
    app.aws
        .s3
        .delete_bucket()
        .bucket(&app.settings.storage.bucket)
        .send()
        .await
        .unwrap();
    let (status, body) = ready().await;
    assert_eq!(status, 200, "answered from the cache: {body}");
    // ...and the next check sees it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["checks"],
        json!({ "postgres": true, "sqs": true, "s3": false })
    );
}
