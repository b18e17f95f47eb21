//! No client-facing error carries SDK, SQL or embedder internals (they go to the log,
//! with the request id), and tokens are checked for issuer, audience and the ops key.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::config::EmbeddingProvider;
use testkit::scripted::{EmbeddingReply, ScriptedEmbeddings};
use testkit::{TestApp, TestOptions};
use uuid::Uuid;

const API_LITE: &str = env!("CARGO_BIN_EXE_api-lite");

/// Words that only ever come from the insides of a dependency.
const INTERNALS: [&str; 12] = [
    "relation",
    "does not exist",
    "sqlx",
    "SQLSTATE",
    "dispatch failure",
    "service error",
    "NoSuchBucket",
    "Connection refused",
    "error sending request",
    "127.0.0.1",
    "embedding failed",
    "http://",
];

fn assert_no_internals(body: &Value) {
    let text = body.to_string();
    for word in INTERNALS {
        assert!(
            !text.contains(word),
            "a client-facing error leaks {word:?}: {text}"
        );
    }
}

#[tokio::test]
async fn database_storage_and_embedder_failures_reach_clients_without_their_internals() {
    let endpoint = ScriptedEmbeddings::start(vec![EmbeddingReply::Vectors])
        .await
        .unwrap();
    let base_url = endpoint.base_url();
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(move |settings| {
            settings.embedding.provider = EmbeddingProvider::Openai;
            settings.embedding.base_url = base_url.clone();
            settings.embedding.model = "scripted".into();
            settings.embedding.dimensions = Some(8);
            settings.embedding.max_retries = 0;
            settings.api.scheduler_enabled = false;
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();

    // The embedder is down: a search that needs it (a mode asked for by name) is 503; left
    // to its default mode, search falls back to text and says so, without the cause.
    endpoint.go_down().await;
    let (status, body) = app
        .post(
            "/v1/search",
            json!({ "query": "anything", "mode": "hybrid" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["error"],
        json!({ "code": "unavailable", "message": "the embedding model is unavailable; try again shortly" })
    );
    assert_no_internals(&body);
    let (status, body) = app
        .post("/v1/search", json!({ "query": "anything" }))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["mode"], "text");
    assert_eq!(
        body["vector_unavailable"],
        shared::search::VECTOR_UNAVAILABLE
    );
    assert_no_internals(&body);
    endpoint.come_back().await.unwrap();

    // S3 answers with an error: the file's bucket is gone.
    let id = app
        .upload("a.txt", "text/plain", b"some text".to_vec())
        .await
        .unwrap();
    let bucket = &app.settings.storage.bucket;
    let objects = app
        .aws
        .s3
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    for object in objects.contents.unwrap_or_default() {
        app.aws
            .s3
            .delete_object()
            .bucket(bucket)
            .key(object.key.unwrap())
            .send()
            .await
            .unwrap();
    }
    app.aws
        .s3
        .delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap();
    let response = app
        .http
        .delete(app.url(&format!("/v1/files/{id}")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"],
        json!({ "code": "unavailable", "message": "file storage is unavailable; try again shortly" })
    );
    assert_no_internals(&body);

    // SQL fails: the table is not there.
    sqlx::query("ALTER TABLE nodes RENAME TO nodes_hidden")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, body) = app
        .post("/v1/nodes", json!({ "title": "t", "instructions": "i" }))
        .await
        .unwrap();
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["error"],
        json!({ "code": "internal", "message": "internal error" })
    );
    assert_no_internals(&body);
    sqlx::query("ALTER TABLE nodes_hidden RENAME TO nodes")
        .execute(&app.pool)
        .await
        .unwrap();
}

/// The cause goes to the log, in the line that carries the request's id.
#[tokio::test]
async fn the_cause_is_logged_with_the_request_id() {
    let app = TestApp::spawn().await.unwrap();
    let port = testkit::private_stack::free_port().unwrap();
    let metrics_port = testkit::private_stack::free_port().unwrap();
    let log_path = std::env::temp_dir().join(format!("api-lite-errors-{}.log", Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = tokio::process::Command::new(API_LITE);
    command.env_clear();
    for (name, value) in app.worker_env() {
        command.env(name, value);
    }
    command
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info,sqlx=warn,aws=warn")
        .env("GLASSBOX_TELEMETRY__FORMAT", "json")
        .env("GLASSBOX_AUTH__JWT_SECRET", testkit::JWT_SECRET)
        .env("GLASSBOX_API__LISTEN", format!("127.0.0.1:{port}"))
        .env("GLASSBOX_API__SCHEDULER_ENABLED", "false")
        .env(
            "GLASSBOX_METRICS__LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    let mut api = command.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while !app
        .http
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|response| response.status().is_success())
    {
        assert!(api.try_wait().unwrap().is_none(), "api-lite exited");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "api-lite did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    sqlx::query("ALTER TABLE files RENAME TO files_hidden")
        .execute(&app.pool)
        .await
        .unwrap();
    let response = app
        .http
        .get(format!("{base}/v1/files"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 500);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = response.json().await.unwrap();
    assert_no_internals(&body);

    let started = Instant::now();
    let logged = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        let line = log
            .lines()
            .find(|line| line.contains(&request_id) && line.contains("request failed"))
            .map(String::from);
        if let Some(line) = line {
            break line;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no log line with request id {request_id}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        logged.contains("files") && logged.contains("does not exist"),
        "the log line carries the cause: {logged}"
    );
    sqlx::query("ALTER TABLE files_hidden RENAME TO files")
        .execute(&app.pool)
        .await
        .unwrap();
    let _ = api.kill().await;
    let _ = std::fs::remove_file(&log_path);
}

#[tokio::test]
async fn tokens_of_another_issuer_or_audience_are_refused() {
    let app = TestApp::spawn().await.unwrap();
    let mut foreign_issuer = app.settings.auth.clone();
    foreign_issuer.issuer = "someone-else".into();
    let token =
        api_lite::auth::mint_token(&foreign_issuer, app.org_id, "mallory", 600, &[]).unwrap();
    let (status, body) = app.get_as("/v1/files", &token).await.unwrap();
    assert_eq!(status, 401, "{body}");
    let mut foreign_audience = app.settings.auth.clone();
    foreign_audience.audience = "another-api".into();
    let token =
        api_lite::auth::mint_token(&foreign_audience, app.org_id, "mallory", 600, &[]).unwrap();
    let (status, _) = app.get_as("/v1/files", &token).await.unwrap();
    assert_eq!(status, 401);
    let (status, _) = app.get("/v1/files").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn with_an_ops_key_only_ops_tokens_signed_by_it_open_the_ops_routes() {
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(|settings| {
            settings.auth.ops_jwt_secret = Some("a-separate-key-for-ops-tokens-0123456789".into());
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let ops = app.ops_token("alice");
    let (status, body) = app.get_as("/v1/ops/queues", &ops).await.unwrap();
    assert_eq!(status, 200, "{body}");
    // The ops role claimed in a token signed with the tenants' key.
    let mut tenant_key_only = app.settings.auth.clone();
    tenant_key_only.ops_jwt_secret = None;
    let forged = api_lite::auth::mint_token(
        &tenant_key_only,
        app.org_id,
        "mallory",
        600,
        &[api_lite::auth::OPS_ROLE],
    )
    .unwrap();
    let (status, _) = app.get_as("/v1/ops/queues", &forged).await.unwrap();
    assert_eq!(status, 401);
    // Tenant tokens are unaffected.
    let (status, _) = app.get("/v1/files").await.unwrap();
    assert_eq!(status, 200);
    // An ops token that lives too long is refused.
    let long_lived = app.mint(
        app.org_id,
        "alice",
        app.settings.auth.ops_token_max_ttl_secs + 60,
        &[api_lite::auth::OPS_ROLE],
    );
    let (status, _) = app.get_as("/v1/ops/queues", &long_lived).await.unwrap();
    assert_eq!(status, 401);
}
