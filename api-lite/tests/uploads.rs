//! Uploads: the presigned PUT binds the declared length, and uploads never confirmed are
//! removed (row and object) once their presigned URL has expired.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{TestApp, TestOptions, wait_until};

async fn create(app: &TestApp, name: &str, size: usize) -> Value {
    let (status, created) = app
        .post(
            "/v1/files",
            json!({ "name": name, "content_type": "text/plain", "size": size }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    created
}

async fn put(app: &TestApp, created: &Value, bytes: &[u8]) -> u16 {
    let mut request = app
        .http
        .put(created["upload"]["url"].as_str().unwrap())
        .body(bytes.to_vec());
    for (name, value) in created["upload"]["headers"].as_object().unwrap() {
        if name != "content-length" {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    request.send().await.unwrap().status().as_u16()
}

async fn object_exists(app: &TestApp, file_id: &str) -> bool {
    app.aws
        .s3
        .head_object()
        .bucket(&app.settings.storage.bucket)
        .key(format!("orgs/{}/files/{file_id}", app.org_id))
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn the_presigned_put_signs_the_declared_content_length() {
    let app = TestApp::spawn().await.unwrap();
    let body = b"hello world";
    let created = create(&app, "hello.txt", body.len()).await;
    assert_eq!(
        created["upload"]["headers"],
        json!({ "content-type": "text/plain", "content-length": "11" })
    );
    let url = reqwest::Url::parse(created["upload"]["url"].as_str().unwrap()).unwrap();
    let signed_headers = url
        .query_pairs()
        .find(|(name, _)| name == "X-Amz-SignedHeaders")
        .map(|(_, value)| value.to_string())
        .expect("a SigV4 presigned URL names its signed headers");
    let signed: Vec<&str> = signed_headers.split(';').collect();
    assert!(
        signed.contains(&"content-length") && signed.contains(&"content-type"),
        "S3 refuses a PUT whose length or type differs from the signed ones: {signed_headers}"
    );
    assert_eq!(put(&app, &created, body).await, 200);
    let id = created["id"].as_str().unwrap();
    let (status, confirmed) = app
        .post(&format!("/v1/files/{id}/confirm"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{confirmed}");

    // moto does not check signatures, so a longer body gets in here; confirm still
    // refuses it (on S3 the PUT itself fails).
    let declared_short = create(&app, "short.txt", 5).await;
    assert_eq!(put(&app, &declared_short, body).await, 200);
    let short_id = declared_short["id"].as_str().unwrap();
    let (status, refused) = app
        .post(&format!("/v1/files/{short_id}/confirm"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "size_mismatch");
}

#[tokio::test]
async fn uploads_never_confirmed_are_removed_after_the_presign_expiry() {
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(|settings| {
            settings.storage.presign_expiry_secs = 2;
            settings.api.abandoned_upload_grace_secs = 0;
            settings.api.sweeper_interval_secs = 1;
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    // Put but never confirmed, and never even put.
    let uploaded = create(&app, "forgotten.txt", 5).await;
    assert_eq!(put(&app, &uploaded, b"bytes").await, 200);
    let uploaded_id = uploaded["id"].as_str().unwrap().to_string();
    let never_put = create(&app, "never.txt", 5).await;
    let never_put_id = never_put["id"].as_str().unwrap().to_string();
    // Confirmed at once: it stays, with its object.
    let kept = app
        .upload("kept.txt", "text/plain", b"kept!".to_vec())
        .await
        .unwrap();
    assert!(object_exists(&app, &uploaded_id).await);

    wait_until(Duration::from_secs(15), || async {
        let (first, _) = app.get(&format!("/v1/files/{uploaded_id}")).await.unwrap();
        let (second, _) = app.get(&format!("/v1/files/{never_put_id}")).await.unwrap();
        first == 404 && second == 404
    })
    .await
    .unwrap();
    assert!(
        !object_exists(&app, &uploaded_id).await,
        "the abandoned object is deleted with its row"
    );
    let (status, file) = app.get(&format!("/v1/files/{kept}")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(file["status"], "queued", "{file}");
    assert!(object_exists(&app, &kept.to_string()).await);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM files WHERE status = 'awaiting_upload'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}
