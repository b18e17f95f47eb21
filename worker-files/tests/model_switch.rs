//! Switching the fleet's embedding model: a `reembed` schedule moves files to the new
//! model one by one while search keeps answering over every file.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::scripted::{EmbeddingReply, ScriptedEmbeddings};
use testkit::{TestApp, TestOptions};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-files");
const PROCESSING: Duration = Duration::from_secs(90);
const OLD_MODEL: &str = "all-minilm-l6-v2";
const NEW_MODEL: &str = "openai:scripted@8";

/// Searches once and checks the answer covers every file; returns the models searched.
async fn search_covers_every_file(app: &TestApp, files: &[Uuid]) -> anyhow::Result<Vec<String>> {
    let (status, body) = app
        .post(
            "/v1/search",
            json!({"query": "lighthouse keeper", "top_k": 50}),
        )
        .await?;
    anyhow::ensure!(status == 200, "search answered {status}: {body}");
    let found: HashSet<String> = body["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .filter_map(|hit| hit["file_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    for file in files {
        anyhow::ensure!(
            found.contains(&file.to_string()),
            "file {file} missing from search mid-switch: {body}"
        );
    }
    Ok(body["models"]
        .as_array()
        .map(|models| {
            models
                .iter()
                .filter_map(|model| model.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default())
}

async fn models_in_use(app: &TestApp) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT embedding_model, count(*) FROM files GROUP BY embedding_model ORDER BY embedding_model",
    )
    .fetch_all(&app.pool)
    .await?)
}

/// Fires the schedule now and searches until `expected_new` files use the new model.
async fn fire_and_search_until(
    app: &TestApp,
    ops: &str,
    schedule: &str,
    files: &[Uuid],
    expected_new: i64,
    models_seen: &mut HashSet<Vec<String>>,
) -> anyhow::Result<usize> {
    let (status, body) = app
        .post_as(&format!("/v1/ops/schedules/{schedule}/run"), json!({}), ops)
        .await?;
    anyhow::ensure!(status == 200, "run now answered {status}: {body}");
    let started = Instant::now();
    let mut searches = 0;
    loop {
        let mut models = search_covers_every_file(app, files).await?;
        models.sort();
        models_seen.insert(models);
        searches += 1;
        let switched: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM files WHERE embedding_model = $1 AND status = 'ready'",
        )
        .bind(NEW_MODEL)
        .fetch_one(&app.pool)
        .await?;
        if switched >= expected_new {
            return Ok(searches);
        }
        anyhow::ensure!(
            started.elapsed() < PROCESSING,
            "only {switched} files switched: {:?}",
            models_in_use(app).await?
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn search_keeps_answering_over_every_file_while_a_reembed_switches_models() {
    let endpoint = ScriptedEmbeddings::start(vec![EmbeddingReply::Vectors])
        .await
        .unwrap();
    let base_url = endpoint.base_url();
    // The fleet's model is now the OpenAI-compatible one; api-lite keeps the local
    // MiniLM as the previous model so search can embed queries for files not yet moved.
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(move |settings| {
            let previous = settings.embedding.clone();
            settings.embedding.provider = shared::config::EmbeddingProvider::Openai;
            settings.embedding.base_url = base_url.clone();
            settings.embedding.model = "scripted".into();
            settings.embedding.dimensions = Some(8);
            settings.embedding.previous = Some(Box::new(previous));
            settings.api.scheduler_enabled = false;
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let ops = app.ops_token("alice");

    // Before the switch: files embedded with the old model by an old-model worker.
    let old_worker = app
        .spawn_worker(WORKER, &[("GLASSBOX_EMBEDDING__PROVIDER", "local")])
        .unwrap();
    let texts = [
        "The lighthouse keeper trims the wick at dusk.",
        "Granite blocks were hauled up the cliff by oxen.",
        "Fog signals sound every thirty seconds in winter.",
        "The lamp turns on a bath of mercury.",
    ];
    let mut files = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        let id = app
            .upload(
                &format!("note-{index}.txt"),
                "text/plain",
                text.as_bytes().to_vec(),
            )
            .await
            .unwrap();
        files.push(id);
    }
    for id in &files {
        let file = app
            .wait_for_file(*id, &["ready", "failed"], PROCESSING)
            .await
            .unwrap();
        assert_eq!(file["status"], "ready", "{file}");
        assert_eq!(file["embedding_model"], OLD_MODEL);
    }
    drop(old_worker);
    let models = search_covers_every_file(&app, &files).await.unwrap();
    assert_eq!(models, [OLD_MODEL]);

    // The switch, in two halves so search is seen answering over a mixed fleet.
    let new_worker = app.spawn_worker(WORKER, &[]).unwrap();
    let (status, schedule) = app
        .post_as(
            "/v1/ops/schedules",
            json!({"name": "move-to-new-model", "cron": "0 3 * * *", "action": "reembed", "filter": {"limit": 2}}),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{schedule}");
    let schedule = schedule["id"].as_str().unwrap().to_string();
    let mut models_seen = HashSet::new();
    let mut searches = fire_and_search_until(&app, &ops, &schedule, &files, 2, &mut models_seen)
        .await
        .unwrap();
    assert_eq!(
        models_in_use(&app).await.unwrap(),
        [(OLD_MODEL.to_string(), 2), (NEW_MODEL.to_string(), 2)]
    );
    let mixed = search_covers_every_file(&app, &files).await.unwrap();
    assert_eq!(
        mixed.len(),
        2,
        "a mixed fleet is searched with both models: {mixed:?}"
    );
    searches += fire_and_search_until(&app, &ops, &schedule, &files, 4, &mut models_seen)
        .await
        .unwrap();
    assert_eq!(
        models_in_use(&app).await.unwrap(),
        [(NEW_MODEL.to_string(), 4)]
    );
    let after: Vec<String> = search_covers_every_file(&app, &files).await.unwrap();
    assert_eq!(
        after,
        [NEW_MODEL],
        "old chunks are gone once every file moved"
    );
    let old_chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM chunks WHERE model_id = $1")
        .bind(OLD_MODEL)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(old_chunks, 0);
    assert!(searches >= 2, "searched during the switch: {searches}");
    let fires: Vec<Value> = sqlx::query_scalar(
        "SELECT jsonb_build_object('affected', affected) FROM schedule_fires ORDER BY fired_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(fires, [json!({"affected": 2}), json!({"affected": 2})]);
    drop(new_worker);
}
