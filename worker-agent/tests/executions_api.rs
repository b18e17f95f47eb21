//! The executions API on its own (no worker runs): idempotent execute, tenancy, control
//! of a queued run, 409s for answers nobody asked for, and the paged trace.

use std::time::Duration;

use serde_json::json;
use testkit::{SseReader, TestApp};
use uuid::Uuid;

#[tokio::test]
async fn execute_is_idempotent_and_control_works_on_a_queued_run() {
    let app = TestApp::spawn().await.unwrap();
    let node = app
        .create_node(
            "Summarise",
            "Summarise the handbook.",
            json!({ "lang": "en" }),
        )
        .await
        .unwrap();
    let (status, first) = app
        .execute(node, Some("key-1"), json!({ "budget": { "max_steps": 5 } }))
        .await
        .unwrap();
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "queued");
    assert_eq!(first["budget"]["max_steps"], 5);
    let (status, again) = app.execute(node, Some("key-1"), json!({})).await.unwrap();
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], first["id"], "same key, same execution");
    let (status, _) = app.execute(node, Some("key-2"), json!({})).await.unwrap();
    assert_eq!(status, 202, "another key starts another execution");
    let other_node = app.create_node("Other", "x", json!({})).await.unwrap();
    let (status, reused) = app
        .execute(other_node, Some("key-1"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    let (status, invalid) = app
        .execute(node, None, json!({ "budget": { "max_steps": 0 } }))
        .await
        .unwrap();
    assert_eq!(status, 422, "{invalid}");

    let id: Uuid = first["id"].as_str().unwrap().parse().unwrap();
    let stranger = app.token_for(Uuid::now_v7());
    let (status, _) = app
        .get_as(&format!("/v1/executions/{id}"), &stranger)
        .await
        .unwrap();
    assert_eq!(
        status, 404,
        "another org's execution does not exist for the caller"
    );
    let (status, _) = app
        .get_as(&format!("/v1/nodes/{node}"), &stranger)
        .await
        .unwrap();
    assert_eq!(status, 404);

    let (status, answer) = app
        .post(
            &format!("/v1/executions/{id}/input"),
            json!({ "answer": "hi" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "nothing_pending");

    let (status, paused) = app
        .post(&format!("/v1/executions/{id}/pause"), json!({}))
        .await
        .unwrap();
    assert_eq!((status, paused["status"].as_str()), (202, Some("paused")));
    let (status, resumed) = app
        .post(&format!("/v1/executions/{id}/resume"), json!({}))
        .await
        .unwrap();
    assert_eq!((status, resumed["status"].as_str()), (202, Some("queued")));
    let (status, _) = app
        .post(&format!("/v1/executions/{id}/resume"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "resuming a run that is not paused");
    let (status, cancelled) = app
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await
        .unwrap();
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (202, Some("cancelled"))
    );
    let (status, _) = app
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "cancelling twice is harmless");
    let (status, refused) = app
        .post(&format!("/v1/executions/{id}/pause"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{refused}");

    let kinds: Vec<String> = app
        .trace(id)
        .await
        .unwrap()
        .iter()
        .map(|event| event["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["queued", "paused", "resumed", "cancelled"]);
    let (_, page) = app
        .get(&format!("/v1/executions/{id}/trace?limit=2"))
        .await
        .unwrap();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_i64().expect("a second page");
    let (_, rest) = app
        .get(&format!("/v1/executions/{id}/trace?after={cursor}&limit=2"))
        .await
        .unwrap();
    assert_eq!(rest["events"][0]["kind"], "resumed");
    assert!(rest["next_cursor"].is_null());
}

#[tokio::test]
async fn the_event_stream_is_live_and_resumes_after_last_event_id() {
    let app = TestApp::spawn().await.unwrap();
    let node = app.create_node("Stream", "x", json!({})).await.unwrap();
    let (_, execution) = app.execute(node, None, json!({})).await.unwrap();
    let id = execution["id"].as_str().unwrap().to_string();
    let path = format!("/v1/executions/{id}/events");

    let mut live = SseReader::open(&app, &path, None).await.unwrap();
    let first = live.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(first.event.as_deref(), Some("queued"));
    app.post(&format!("/v1/executions/{id}/pause"), json!({}))
        .await
        .unwrap();
    let paused = live.next(Duration::from_secs(5)).await.unwrap().unwrap();
    assert_eq!(
        paused.event.as_deref(),
        Some("paused"),
        "events arrive live"
    );
    app.post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await
        .unwrap();
    let rest = live.collect(Duration::from_secs(5)).await.unwrap();
    let names: Vec<_> = rest
        .iter()
        .filter_map(|event| event.event.clone())
        .collect();
    assert_eq!(names, ["cancelled"], "the stream closes once the run ended");
    let data: serde_json::Value = serde_json::from_str(&rest[0].data).unwrap();
    assert_eq!(data["kind"], "cancelled");

    let resumed = SseReader::open(&app, &path, first.id.as_deref())
        .await
        .unwrap()
        .collect(Duration::from_secs(5))
        .await
        .unwrap();
    let names: Vec<_> = resumed
        .iter()
        .filter_map(|event| event.event.clone())
        .collect();
    assert_eq!(
        names,
        ["paused", "cancelled"],
        "resumed right after the last seen event"
    );
    let stranger = app.token_for(Uuid::now_v7());
    let (status, _) = app.get_as(&path, &stranger).await.unwrap();
    assert_eq!(status, 404);
}
