//! Search over files ingested by a real worker (local model, real Postgres): each mode
//! finds what it is good at and says why, the filters narrow search and the file list
//! alike, and another org sees none of it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::{TestApp, TestOptions};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-files");
const PROCESSING: Duration = Duration::from_secs(90);

/// Four small documents. Every one says "GlassBox", so a text search for it matches all;
/// one holds an identifier no model understands, one a sentence a paraphrase can find
/// without sharing a word with it.
struct Corpus {
    app: TestApp,
    lighthouse: Uuid,
    sourdough: Uuid,
    expenses: Uuid,
    cat: Uuid,
}

impl Corpus {
    async fn ingest() -> Corpus {
        // These tests ask many questions back to back; the per-org rate limit is not what they
        // test (api-lite's own tests do), so it must not answer some of them with 429.
        let app = TestApp::spawn_with(TestOptions {
            configure: Some(Arc::new(|settings| {
                settings.api.rate_limit_per_sec = 1_000.0;
                settings.api.rate_limit_burst = 1_000;
            })),
            ..TestOptions::default()
        })
        .await
        .unwrap();
        let _worker = app.spawn_worker(WORKER, &[]).unwrap();
        let documents = [
            (
                "ops/lighthouse.txt",
                "text/plain",
                "GlassBox notes. The lighthouse keeper trims the wick at dusk and winds the clockwork that turns the lamp.",
                json!({"team": "ops", "year": 2023}),
            ),
            (
                "kitchen/sourdough.md",
                "text/markdown",
                "# GlassBox bakery\n\nFeed the sourdough starter with flour and water twice a day.",
                json!({"team": "kitchen", "year": 2024}),
            ),
            (
                "finance/expenses.txt",
                "text/plain",
                "GlassBox finance. Claims are filed on form ZQ-4471 before the end of each month.",
                json!({"team": "finance", "year": 2024, "tags": ["forms"]}),
            ),
            (
                "ops/cat.txt",
                "text/plain",
                "GlassBox office. The cat sat on the mat by the window all afternoon.",
                json!({"team": "ops", "year": 2024}),
            ),
        ];
        let mut ids = Vec::new();
        for (name, content_type, text, metadata) in documents {
            let id = app
                .upload_with_metadata(name, content_type, text.as_bytes().to_vec(), metadata)
                .await
                .unwrap();
            ids.push(id);
        }
        for id in &ids {
            let file = app
                .wait_for_file(*id, &["ready", "failed"], PROCESSING)
                .await
                .unwrap();
            assert_eq!(file["status"], "ready", "{file}");
        }
        Corpus {
            app,
            lighthouse: ids[0],
            sourdough: ids[1],
            expenses: ids[2],
            cat: ids[3],
        }
    }

    async fn search(&self, body: Value) -> Value {
        let (status, found) = self.app.post("/v1/search", body.clone()).await.unwrap();
        assert_eq!(status, 200, "{body} -> {found}");
        found
    }

    /// The files of the hits, in hit order, without repeats.
    async fn files_found(&self, body: Value) -> Vec<Uuid> {
        let found = self.search(body).await;
        let mut files = Vec::new();
        for hit in found["hits"].as_array().unwrap() {
            let id: Uuid = hit["file_id"].as_str().unwrap().parse().unwrap();
            if !files.contains(&id) {
                files.push(id);
            }
        }
        files
    }
}

fn set(ids: &[Uuid]) -> BTreeSet<Uuid> {
    ids.iter().copied().collect()
}

#[tokio::test]
async fn each_mode_finds_what_it_is_good_at_and_says_why() {
    let corpus = Corpus::ingest().await;

    // An identifier: words find it, and the hit says it came from the text leg only.
    let found = corpus
        .search(json!({"query": "ZQ-4471", "mode": "text", "top_k": 3}))
        .await;
    assert_eq!(found["mode"], "text");
    let first = &found["hits"][0];
    assert_eq!(first["file_id"], corpus.expenses.to_string(), "{found}");
    assert_eq!(first["text_rank"], 1);
    assert!(first["text_score"].as_f64().unwrap() > 0.0, "{found}");
    assert_eq!(first["score"], first["text_score"]);
    assert!(first["vector_score"].is_null() && first["vector_rank"].is_null());
    assert!(first["fused_score"].is_null());
    assert!(first.get("heading_path").is_some() && first.get("ocr").is_some());
    assert_eq!(found["hits"].as_array().unwrap().len(), 1, "{found}");

    // A paraphrase that shares no word with its answer: only meaning finds it.
    let paraphrase = "a feline resting on a rug";
    let found = corpus
        .search(json!({"query": paraphrase, "mode": "text"}))
        .await;
    assert_eq!(found["hits"].as_array().unwrap().len(), 0, "{found}");
    let found = corpus
        .search(json!({"query": paraphrase, "mode": "vector", "top_k": 1}))
        .await;
    assert_eq!(found["mode"], "vector");
    assert_eq!(found["models"], json!(["all-minilm-l6-v2"]));
    let first = &found["hits"][0];
    assert_eq!(first["file_id"], corpus.cat.to_string(), "{found}");
    assert_eq!(first["vector_rank"], 1);
    assert_eq!(first["score"], first["vector_score"]);
    assert!(first["text_rank"].is_null() && first["fused_score"].is_null());

    // Left to its default, search is hybrid and finds both kinds of answer at once.
    let both = format!("form ZQ-4471, {paraphrase}");
    let found = corpus.search(json!({"query": both, "top_k": 4})).await;
    assert_eq!(found["mode"], "hybrid", "{found}");
    let top_two: BTreeSet<String> = found["hits"].as_array().unwrap()[..2]
        .iter()
        .map(|hit| hit["file_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        top_two,
        [corpus.expenses.to_string(), corpus.cat.to_string()].into(),
        "{found}"
    );
    for hit in found["hits"].as_array().unwrap() {
        // Every hit's fused score is the sum of 1/(60 + rank) over the legs that found it.
        let expected: f64 = ["vector_rank", "text_rank"]
            .iter()
            .filter_map(|leg| hit[*leg].as_f64())
            .map(|rank| 1.0 / (60.0 + rank))
            .sum();
        assert!(
            (hit["fused_score"].as_f64().unwrap() - expected).abs() < 1e-9,
            "{hit}"
        );
        assert_eq!(hit["score"], hit["fused_score"]);
    }
    let expenses_hit = found["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|hit| hit["file_id"] == corpus.expenses.to_string())
        .unwrap();
    assert_eq!(
        expenses_hit["text_rank"], 1,
        "the text leg ranks the identifier first: {found}"
    );
    assert!(expenses_hit["vector_rank"].is_u64(), "{found}");

    // Text mode needs no model, and a query of stop words only finds nothing by text.
    let found = corpus
        .search(json!({"query": "the of and", "mode": "text"}))
        .await;
    assert_eq!(found["hits"].as_array().unwrap().len(), 0, "{found}");
    assert!(found["models"].as_array().unwrap().is_empty());
    let found = corpus
        .search(json!({"query": "the of and", "mode": "hybrid", "top_k": 2}))
        .await;
    assert_eq!(
        found["hits"].as_array().unwrap().len(),
        2,
        "the vector leg still answers: {found}"
    );

    // The old callers' shape still works: a query and top_k, score on every hit.
    let found = corpus
        .search(json!({"query": "when does the keeper trim the wick", "top_k": 1}))
        .await;
    assert_eq!(found["hits"][0]["file_id"], corpus.lighthouse.to_string());
    assert!(found["hits"][0]["vector_score"].as_f64().unwrap() > 0.3);
}

#[tokio::test]
async fn filters_narrow_search_and_the_file_list_in_every_mode() {
    let corpus = Corpus::ingest().await;
    let all = [
        corpus.lighthouse,
        corpus.sourdough,
        corpus.expenses,
        corpus.cat,
    ];
    let (_, expenses_file) = corpus
        .app
        .get(&format!("/v1/files/{}", corpus.expenses))
        .await
        .unwrap();
    assert_eq!(
        expenses_file["metadata"],
        json!({"team": "finance", "year": 2024, "tags": ["forms"]})
    );
    let expenses_created = expenses_file["created_at"].as_str().unwrap().to_string();

    let cases: Vec<(&str, Value, Vec<Uuid>)> = vec![
        ("no filter", json!({}), all.to_vec()),
        (
            "metadata equality",
            json!({"metadata": {"team": "ops"}}),
            vec![corpus.lighthouse, corpus.cat],
        ),
        (
            "metadata in",
            json!({"metadata": {"year": {"in": [2023, 1999]}}}),
            vec![corpus.lighthouse],
        ),
        (
            "metadata equality and in together",
            json!({"metadata": {"team": {"in": ["ops", "finance"]}, "year": 2024}}),
            vec![corpus.expenses, corpus.cat],
        ),
        (
            "an array value is not equal to one of its items",
            json!({"metadata": {"tags": "forms"}}),
            vec![],
        ),
        (
            "content type",
            json!({"content_type": "text/markdown"}),
            vec![corpus.sourdough],
        ),
        (
            "content types",
            json!({"content_type": ["text/markdown", "TEXT/PLAIN"]}),
            all.to_vec(),
        ),
        (
            "name prefix",
            json!({"name_prefix": "ops/"}),
            vec![corpus.lighthouse, corpus.cat],
        ),
        (
            "file ids",
            json!({"file_ids": [corpus.sourdough, corpus.cat]}),
            vec![corpus.sourdough, corpus.cat],
        ),
        (
            "created after (inclusive)",
            json!({"created_after": expenses_created}),
            vec![corpus.expenses, corpus.cat],
        ),
        (
            "created before (exclusive)",
            json!({"created_before": expenses_created}),
            vec![corpus.lighthouse, corpus.sourdough],
        ),
        (
            "every filter at once",
            json!({"metadata": {"team": "ops"}, "name_prefix": "ops/c", "content_type": "text/plain",
                   "created_after": expenses_created, "file_ids": all}),
            vec![corpus.cat],
        ),
    ];
    for (label, filter, expected) in &cases {
        for mode in ["vector", "text", "hybrid"] {
            let mut body = json!({"query": "GlassBox", "mode": mode, "top_k": 20});
            for (key, value) in filter.as_object().unwrap() {
                body[key] = value.clone();
            }
            let found = corpus.files_found(body).await;
            assert_eq!(set(&found), set(expected), "{label}, {mode}");
        }
        // The file list takes the same filters, as query parameters.
        let mut parameters = vec![];
        for (key, value) in filter.as_object().unwrap() {
            let text = match (key.as_str(), value) {
                ("metadata", value) => value.to_string(),
                (_, Value::Array(items)) => items
                    .iter()
                    .map(|item| item.as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                (_, Value::String(text)) => text.clone(),
                (_, other) => other.to_string(),
            };
            parameters.push((key.clone(), text));
        }
        let url =
            reqwest::Url::parse_with_params(&corpus.app.url("/v1/files"), &parameters).unwrap();
        let (status, page) = get_url(&corpus.app, url.as_str(), &corpus.app.token).await;
        assert_eq!(status, 200, "{label}: {page}");
        let listed: Vec<Uuid> = page["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| file["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(set(&listed), set(expected), "file list, {label}");
    }

    // A filter narrows the vector leg exactly: the one file it allows answers even when
    // the query is about another file entirely.
    let found = corpus
        .files_found(
            json!({"query": "sourdough starter flour", "mode": "vector", "top_k": 1,
                            "metadata": {"team": "finance"}}),
        )
        .await;
    assert_eq!(found, [corpus.expenses]);

    // Another org sees nothing through any filter or mode, not even with the ids.
    let intruder = corpus.app.token_for(Uuid::now_v7());
    for mode in ["vector", "text", "hybrid"] {
        let (status, found) = corpus
            .app
            .post_as(
                "/v1/search",
                json!({"query": "GlassBox", "mode": mode, "file_ids": all, "metadata": {"team": "ops"}}),
                &intruder,
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            found["hits"].as_array().unwrap().len(),
            0,
            "{mode}: {found}"
        );
    }
    let url = reqwest::Url::parse_with_params(
        &corpus.app.url("/v1/files"),
        &[("metadata", r#"{"team":"ops"}"#)],
    )
    .unwrap();
    let (status, page) = get_url(&corpus.app, url.as_str(), &intruder).await;
    assert_eq!(status, 200);
    assert_eq!(page["files"].as_array().unwrap().len(), 0, "{page}");
}

async fn get_url(app: &TestApp, url: &str, token: &str) -> (u16, Value) {
    let response = app.http.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A scan with no text layer is OCR'd by the worker and found by a phrase of its text; a
/// structured document's hits carry their heading path; both say where their text came from.
#[tokio::test]
async fn a_scanned_pdf_is_searchable_and_hits_carry_heading_paths_and_ocr() {
    let app = TestApp::spawn().await.unwrap();
    let _worker = app.spawn_worker(WORKER, &[]).unwrap();
    let scanned = testkit::fixtures::scanned_pdf(&[
        "Harbour safety notice\n\nThe northern crane is closed for repairs until further notice.",
    ]);
    let scan_id = app
        .upload("scans/notice.pdf", "application/pdf", scanned)
        .await
        .unwrap();
    let guide = "# Harbour guide\n\nWelcome to the port.\n\n## Cranes\n\nThe southern crane lifts containers day and night.\n";
    let guide_id = app
        .upload("guide.md", "text/markdown", guide.as_bytes().to_vec())
        .await
        .unwrap();
    for id in [scan_id, guide_id] {
        let file = app
            .wait_for_file(id, &["ready", "failed"], PROCESSING)
            .await
            .unwrap();
        assert_eq!(file["status"], "ready", "{file}");
    }

    let (status, found) = app
        .post(
            "/v1/search",
            json!({"query": "northern crane closed for repairs", "mode": "text", "top_k": 1}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{found}");
    let hit = &found["hits"][0];
    assert_eq!(hit["file_id"], scan_id.to_string(), "{found}");
    assert_eq!(hit["ocr"], true, "{found}");
    assert_eq!(hit["page"], 1);

    let (status, found) = app
        .post(
            "/v1/search",
            json!({"query": "southern crane containers", "top_k": 1, "file_ids": [guide_id]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{found}");
    let hit = &found["hits"][0];
    assert_eq!(
        hit["heading_path"],
        json!(["Harbour guide", "Cranes"]),
        "{found}"
    );
    assert_eq!(hit["ocr"], false);
}
