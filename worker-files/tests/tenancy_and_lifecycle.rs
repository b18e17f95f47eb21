//! What another org can and cannot do, and the file lifecycle around processing:
//! delete, reprocess, list.

use std::time::Duration;

use serde_json::json;
use testkit::TestApp;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-files");
const PROCESSING: Duration = Duration::from_secs(90);

#[tokio::test]
async fn another_org_cannot_see_search_reprocess_or_delete_the_file() {
    let app = TestApp::spawn().await.unwrap();
    let _worker = app.spawn_worker(WORKER, &[]).unwrap();
    let id = app
        .upload(
            "secret.md",
            "text/markdown",
            b"# Merger\n\nThe confidential merger closes in March.".to_vec(),
        )
        .await
        .unwrap();
    app.wait_for_file(id, &["ready"], PROCESSING).await.unwrap();

    let intruder = app.token_for(uuid::Uuid::now_v7());
    let (status, body) = app
        .get_as(&format!("/v1/files/{id}"), &intruder)
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = app.get_as("/v1/files", &intruder).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["files"].as_array().unwrap().len(), 0, "{body}");
    let (status, body) = app
        .post_as(
            "/v1/search",
            json!({ "query": "confidential merger", "top_k": 5 }),
            &intruder,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["hits"].as_array().unwrap().len(), 0, "{body}");
    let (status, _) = app
        .post_as(
            "/v1/search",
            json!({ "query": "merger", "file_ids": [id] }),
            &intruder,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = app
        .post_as(&format!("/v1/files/{id}/reprocess"), json!({}), &intruder)
        .await
        .unwrap();
    assert_eq!(status, 404);
    let response = app
        .http
        .delete(app.url(&format!("/v1/files/{id}")))
        .bearer_auth(&intruder)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);

    // The owner still has everything.
    let (status, body) = app
        .post(
            "/v1/search",
            json!({ "query": "confidential merger", "top_k": 5 }),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["hits"][0]["file_id"], id.to_string(), "{body}");
}

#[tokio::test]
async fn reprocess_runs_again_and_delete_removes_object_and_chunks() {
    let app = TestApp::spawn().await.unwrap();
    let _worker = app.spawn_worker(WORKER, &[]).unwrap();
    let id = app
        .upload(
            "cycle.txt",
            "text/plain",
            "Reprocessing replaces the chunks. ".repeat(40).into_bytes(),
        )
        .await
        .unwrap();
    let first = app.wait_for_file(id, &["ready"], PROCESSING).await.unwrap();

    let (status, body) = app
        .post(&format!("/v1/files/{id}/reprocess"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{body}");
    let (status, body) = app
        .post(&format!("/v1/files/{id}/reprocess"), json!({}))
        .await
        .unwrap();
    assert_eq!(
        status, 409,
        "a queued file cannot be reprocessed again: {body}"
    );
    assert_eq!(body["error"]["code"], "not_reprocessable");
    let second = app.wait_for_file(id, &["ready"], PROCESSING).await.unwrap();
    assert_eq!(second["chunk_count"], first["chunk_count"]);
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM chunks WHERE file_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, first["chunk_count"].as_i64().unwrap());
    // Identical text was not embedded again: the same vectors were reused.
    assert!(second["finished_at"].as_str() > first["finished_at"].as_str());

    let response = app
        .http
        .delete(app.url(&format!("/v1/files/{id}")))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    let (status, _) = app.get(&format!("/v1/files/{id}")).await.unwrap();
    assert_eq!(status, 404);
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM chunks WHERE file_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
    let object = app
        .aws
        .s3
        .head_object()
        .bucket(&app.settings.storage.bucket)
        .key(format!("orgs/{}/files/{id}", app.org_id))
        .send()
        .await;
    assert!(object.is_err(), "the object is gone");
}
