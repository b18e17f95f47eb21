//! Text search's candidates (`shared::search::COMMON_LEXEME_CHUNKS`): a lexeme found in
//! many chunks counts in the rank but picks no candidates while a rarer one does, so a
//! chunk holding the query's rare word comes before chunks holding only its common words;
//! and when the rare words find nothing, the common ones still answer.

use serde_json::{Value, json};
use testkit::TestApp;
use uuid::Uuid;

/// One ready file of the app's org, 1,000 chunks about the northern office's quarterly
/// figures (every lexeme of them common) and three about the harbour toll, analyzed.
async fn office_and_harbour(app: &TestApp) -> Uuid {
    let file_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, status, embedding_model, chunk_count) \
         VALUES ($1, $2, 'reports.txt', 'text/plain', 1, 'k', 'ready', 'm', 1003)",
    )
    .bind(file_id)
    .bind(app.org_id)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO chunks (org_id, file_id, model_id, chunk_index, byte_start, byte_end, token_count, text_sha256, text, embedding) \
         SELECT $1, $2, 'm', n, 0, 1, 1, sha256(n::text::bytea), \
                CASE WHEN n < 3 THEN 'the harbour toll was raised, chunk ' || n \
                     ELSE 'quarterly figures of the northern office, quarterly figures again, chunk ' || n END, \
                '[1,0,0]' \
         FROM generate_series(0, 1002) AS n",
    )
    .bind(app.org_id)
    .bind(file_id)
    .execute(&app.pool)
    .await
    .unwrap();
    // The statistics that tell common lexemes from rare ones (autovacuum's job, later).
    sqlx::query("ANALYZE chunks")
        .execute(&app.pool)
        .await
        .unwrap();
    file_id
}

async fn text_search(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, found) = app
        .post(
            "/v1/search",
            json!({"query": query, "mode": "text", "top_k": 5}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{found}");
    found["hits"].as_array().unwrap().clone()
}

fn chunk_indexes(hits: &[Value]) -> Vec<i64> {
    hits.iter()
        .map(|hit| hit["chunk_index"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_rare_word_picks_the_chunks_and_common_words_only_rank_them() {
    let app = TestApp::spawn().await.unwrap();
    office_and_harbour(&app).await;

    // By `ts_rank` alone, "quarterly figures" twice outscores "harbour" once; the rare
    // word is what the question is about, so its three chunks come first.
    let hits = text_search(&app, "harbour quarterly figures").await;
    let mut first_three = chunk_indexes(&hits)[..3].to_vec();
    first_three.sort_unstable();
    assert_eq!(first_three, vec![0, 1, 2], "{hits:#?}");
    for hit in &hits[..3] {
        assert!(hit["text"].as_str().unwrap().contains("harbour"), "{hit}");
    }
    // The two places left go to the best of the chunks with only common words.
    assert_eq!(hits.len(), 5, "{hits:#?}");
    for hit in &hits[3..] {
        assert!(hit["text"].as_str().unwrap().contains("quarterly"), "{hit}");
    }
}

#[tokio::test]
async fn common_words_still_answer_when_the_rare_ones_find_nothing() {
    let app = TestApp::spawn().await.unwrap();
    office_and_harbour(&app).await;

    // "lighthouse" is in no chunk: the common words find the office's chunks.
    let hits = text_search(&app, "lighthouse of the northern office").await;
    assert_eq!(hits.len(), 5, "{hits:#?}");
    for hit in &hits {
        assert!(
            hit["text"].as_str().unwrap().contains("northern office"),
            "{hit}"
        );
    }
    // A question of common words only is answered by them alone.
    let hits = text_search(&app, "quarterly figures").await;
    assert_eq!(hits.len(), 5, "{hits:#?}");
    // A question of stop words has no lexeme: no hits, no error.
    assert!(text_search(&app, "of the").await.is_empty());
}
