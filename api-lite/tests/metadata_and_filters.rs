//! File metadata through the API (set at create, merge-patched, checked for size, depth
//! and keys, scoped by org) and the typed errors of bad search and list requests.

use std::sync::Arc;

use serde_json::{Value, json};
use testkit::{TestApp, TestOptions};
use uuid::Uuid;

async fn create(app: &TestApp, name: &str, metadata: Value) -> (u16, Value) {
    app.post(
        "/v1/files",
        json!({"name": name, "content_type": "text/plain", "size": 10, "metadata": metadata}),
    )
    .await
    .unwrap()
}

async fn patch(app: &TestApp, id: &str, body: Value, token: &str) -> (u16, Value) {
    let response = app
        .http
        .patch(app.url(&format!("/v1/files/{id}")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn nested(levels: usize) -> Value {
    let mut value = json!("leaf");
    for _ in 0..levels {
        value = json!({ "k": value });
    }
    value
}

#[tokio::test]
async fn metadata_is_set_at_create_checked_and_merge_patched() {
    let app = TestApp::spawn().await.unwrap();

    let (status, created) = create(
        &app,
        "plain.txt",
        json!({"team": "legal", "source": {"system": "crm", "ids": [1, 2]}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let (_, file) = app.get(&format!("/v1/files/{id}")).await.unwrap();
    assert_eq!(
        file["metadata"],
        json!({"team": "legal", "source": {"system": "crm", "ids": [1, 2]}})
    );
    // Without metadata a file gets an empty object.
    let (_, bare) = app
        .post(
            "/v1/files",
            json!({"name": "bare.txt", "content_type": "text/plain", "size": 1}),
        )
        .await
        .unwrap();
    let (_, bare) = app
        .get(&format!("/v1/files/{}", bare["id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(bare["metadata"], json!({}));

    // Refused at create, with a typed error, and no file is left behind.
    for (label, metadata) in [
        ("an array", json!(["team"])),
        ("a string", json!("legal")),
        ("too deep", nested(6)),
        ("too large", json!({"blob": "x".repeat(9000)})),
        ("an empty key", json!({"": 1})),
    ] {
        let (status, body) = create(&app, "refused.txt", metadata).await;
        assert_eq!(status, 422, "{label}: {body}");
        assert_eq!(body["error"]["code"], "invalid_metadata", "{label}: {body}");
    }
    let (_, page) = app.get("/v1/files").await.unwrap();
    assert_eq!(page["files"].as_array().unwrap().len(), 2, "{page}");
    // Five levels are allowed.
    let (status, body) = create(&app, "deep.txt", nested(5)).await;
    assert_eq!(status, 201, "{body}");

    // A merge patch: set, replace, remove a key with null, merge nested objects.
    let (status, patched) = patch(
        &app,
        &id,
        json!({"metadata": {"year": 2024, "team": "tax", "source": {"ids": null, "region": "eu"}}}),
        &app.token,
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["metadata"],
        json!({"team": "tax", "year": 2024, "source": {"system": "crm", "region": "eu"}})
    );
    let (_, file) = app.get(&format!("/v1/files/{id}")).await.unwrap();
    assert_eq!(file["metadata"], patched["metadata"]);

    // A patch whose result breaks a limit changes nothing.
    let (status, body) = patch(
        &app,
        &id,
        json!({"metadata": {"blob": "x".repeat(9000)}}),
        &app.token,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_metadata");
    let (status, body) = patch(
        &app,
        &id,
        json!({"metadata": {"deep": nested(5)}}),
        &app.token,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let (_, file) = app.get(&format!("/v1/files/{id}")).await.unwrap();
    assert_eq!(file["metadata"], patched["metadata"]);

    // Only metadata can be patched, and only with an object or null.
    for (body, code) in [
        (json!({"name": "renamed.txt"}), "invalid_request"),
        (json!({}), "invalid_request"),
        (json!({"metadata": [1]}), "invalid_metadata"),
        (json!({"metadata": "x"}), "invalid_metadata"),
    ] {
        let (status, answer) = patch(&app, &id, body.clone(), &app.token).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }

    // Another org cannot patch it; a missing file is 404 too.
    let intruder = app.token_for(Uuid::now_v7());
    let (status, body) = patch(&app, &id, json!({"metadata": {"x": 1}}), &intruder).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = patch(
        &app,
        &Uuid::now_v7().to_string(),
        json!({"metadata": {"x": 1}}),
        &app.token,
    )
    .await;
    assert_eq!(status, 404);
    let (_, file) = app.get(&format!("/v1/files/{id}")).await.unwrap();
    assert_eq!(file["metadata"], patched["metadata"]);

    // null clears it all.
    let (status, cleared) = patch(&app, &id, json!({"metadata": null}), &app.token).await;
    assert_eq!(status, 200);
    assert_eq!(cleared["metadata"], json!({}));
}

#[tokio::test]
async fn bad_search_and_list_requests_get_typed_errors() {
    let app = TestApp::spawn().await.unwrap();
    for (body, code) in [
        (json!({"query": "x", "mode": "fuzzy"}), "invalid_request"),
        (json!({"query": "x", "filter": {}}), "invalid_request"),
        (
            json!({"query": "x", "metadata": {"team": {"like": "l%"}}}),
            "invalid_filter",
        ),
        (
            json!({"query": "x", "metadata": ["team"]}),
            "invalid_filter",
        ),
        (
            json!({"query": "x", "metadata": {"year": {"in": []}}}),
            "invalid_filter",
        ),
        (
            json!({"query": "x", "metadata": {"team": null}}),
            "invalid_filter",
        ),
        (json!({"query": "x", "name_prefix": ""}), "invalid_filter"),
        (json!({"query": "x", "content_type": []}), "invalid_filter"),
        (
            json!({"query": "x", "created_after": "2024-02-01T00:00:00Z", "created_before": "2024-01-01T00:00:00Z"}),
            "invalid_filter",
        ),
        (
            json!({"query": "x", "created_after": "last tuesday"}),
            "invalid_request",
        ),
    ] {
        let (status, answer) = app.post("/v1/search", body.clone()).await.unwrap();
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    for (query, code) in [
        ("file_ids=not-a-uuid", "invalid_filter"),
        ("metadata=%7Bnot%20json", "invalid_filter"),
        ("metadata=%5B1%5D", "invalid_filter"),
        ("content_type=", "invalid_filter"),
        ("created_after=yesterday", "invalid_request"),
        ("colour=blue", "invalid_request"),
    ] {
        let (status, answer) = app.get(&format!("/v1/files?{query}")).await.unwrap();
        assert_eq!(status, 422, "{query}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{query}: {answer}");
    }
}

#[tokio::test]
async fn the_default_mode_falls_back_to_text_when_the_query_cannot_be_embedded() {
    // An embedding endpoint that refuses connections: nothing listens on port 9.
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(|settings| {
            settings.embedding.provider = shared::config::EmbeddingProvider::Openai;
            settings.embedding.base_url = "http://127.0.0.1:9/v1".into();
            settings.embedding.model = "unreachable".into();
            settings.embedding.dimensions = Some(8);
            settings.embedding.api_key = Some("unused".to_string().into());
            settings.embedding.max_retries = 0;
            settings.embedding.request_timeout_secs = 2;
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let (status, found) = app
        .post("/v1/search", json!({"query": "lighthouse"}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["mode"], "text");
    assert!(
        found["vector_unavailable"]
            .as_str()
            .is_some_and(|why| !why.is_empty()),
        "{found}"
    );
    // Asked for by name, a mode that needs the model says it is unavailable.
    for mode in ["vector", "hybrid"] {
        let (status, answer) = app
            .post("/v1/search", json!({"query": "lighthouse", "mode": mode}))
            .await
            .unwrap();
        assert_eq!(status, 503, "{mode}: {answer}");
    }
    let (status, found) = app
        .post("/v1/search", json!({"query": "lighthouse", "mode": "text"}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(found.get("vector_unavailable").is_none(), "{found}");
}
