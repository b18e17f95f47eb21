//! The half of migration 0008 that runs outside it (`shared::online_migrations`): the
//! batched backfill of chunks stored before the trigger, the indexes built concurrently
//! (an invalid one left by a crash is rebuilt), one runner at a time; and the filters'
//! and text search's SQL shapes can use those indexes.

use std::time::Duration;

use serde_json::json;
use shared::file_filter::{FileFilter, FilterInput};
use shared::online_migrations;
use sqlx::{PgPool, QueryBuilder};
use testkit::TestApp;
use uuid::Uuid;

const INDEXES: [&str; 3] = [
    "chunks_search_vector",
    "files_org_metadata",
    "files_org_name",
];

/// Waits for the run api-lite's start began in the background: every index valid and
/// the advisory lock released.
async fn wait_for_the_background_run(pool: &PgPool) {
    testkit::wait_until(Duration::from_secs(30), || async {
        let lock_free: bool = sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
             AND classid = ($1::int8 >> 32)::oid AND objid = ($1::int8 & 4294967295)::oid AND objsubid = 1)",
        )
        .bind(online_migrations::ADVISORY_LOCK_KEY)
        .fetch_one(pool)
        .await
        .unwrap();
        lock_free && valid_indexes(pool).await.len() == INDEXES.len()
    })
    .await
    .unwrap();
}

async fn valid_indexes(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid \
         WHERE c.relname = ANY($1) AND i.indisvalid ORDER BY 1",
    )
    .bind(INDEXES.map(String::from).to_vec())
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A ready file with `texts` as chunks, stored the way rows written before migration 0008
/// look: no search vector.
async fn file_stored_before_the_trigger(app: &TestApp, texts: &[&str]) -> Uuid {
    let file_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, status, embedding_model, chunk_count) \
         VALUES ($1, $2, 'old.txt', 'text/plain', 1, 'k', 'ready', 'all-minilm-l6-v2', $3)",
    )
    .bind(file_id)
    .bind(app.org_id)
    .bind(texts.len() as i32)
    .execute(&app.pool)
    .await
    .unwrap();
    let mut transaction = app.pool.begin().await.unwrap();
    sqlx::query("ALTER TABLE chunks DISABLE TRIGGER chunks_search_vector")
        .execute(&mut *transaction)
        .await
        .unwrap();
    for (index, text) in texts.iter().enumerate() {
        sqlx::query(
            "INSERT INTO chunks (org_id, file_id, model_id, chunk_index, byte_start, byte_end, token_count, text_sha256, text, embedding) \
             VALUES ($1, $2, 'all-minilm-l6-v2', $3, 0, 1, 1, '\\x00', $4, array_fill(0.1, ARRAY[384])::real[]::vector)",
        )
        .bind(app.org_id)
        .bind(file_id)
        .bind(index as i32)
        .bind(text)
        .execute(&mut *transaction)
        .await
        .unwrap();
    }
    sqlx::query("ALTER TABLE chunks ENABLE TRIGGER chunks_search_vector")
        .execute(&mut *transaction)
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    file_id
}

#[tokio::test]
async fn chunks_from_before_the_migration_are_backfilled_and_indexes_rebuilt_once() {
    let app = TestApp::spawn().await.unwrap();
    // api-lite's start runs the online steps in the background.
    wait_for_the_background_run(&app.pool).await;

    let texts: Vec<String> = (0..4_500)
        .map(|index| format!("Ledger entry {index} about the harbour toll"))
        .collect();
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    file_stored_before_the_trigger(&app, &text_refs).await;
    let missing: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chunks WHERE search_vector IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(missing, 4_500);
    let (_, found) = app
        .post(
            "/v1/search",
            json!({"query": "harbour toll", "mode": "text"}),
        )
        .await
        .unwrap();
    assert_eq!(
        found["hits"].as_array().unwrap().len(),
        0,
        "not yet backfilled: {found}"
    );

    // A build a crash cut short leaves an invalid index under the right name: this unique
    // index fails on the org's two rows and stays behind, invalid.
    sqlx::query("DROP INDEX files_org_name")
        .execute(&app.pool)
        .await
        .unwrap();
    file_stored_before_the_trigger(&app, &[]).await;
    let failed = sqlx::query("CREATE UNIQUE INDEX CONCURRENTLY files_org_name ON files (org_id)")
        .execute(&app.pool)
        .await;
    assert!(failed.is_err());
    sqlx::query("DROP INDEX chunks_search_vector")
        .execute(&app.pool)
        .await
        .unwrap();

    // While another runner holds the lock, this one leaves the work to it.
    let mut holder = app.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(online_migrations::ADVISORY_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .unwrap();
    let report = online_migrations::run(&app.pool).await.unwrap();
    assert!(report.skipped, "{report:?}");
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);

    let report = online_migrations::run(&app.pool).await.unwrap();
    assert!(!report.skipped);
    assert_eq!(report.chunks_backfilled, 4_500);
    assert_eq!(
        report.indexes_built,
        ["chunks_search_vector", "files_org_name"]
    );
    assert_eq!(valid_indexes(&app.pool).await, INDEXES);
    let definition: String =
        sqlx::query_scalar("SELECT pg_get_indexdef('files_org_name'::regclass)")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        definition.contains("COLLATE \"C\"") && !definition.contains("UNIQUE"),
        "{definition}"
    );
    let (_, found) = app
        .post(
            "/v1/search",
            json!({"query": "harbour toll ledger", "mode": "text", "top_k": 3}),
        )
        .await
        .unwrap();
    assert_eq!(found["hits"].as_array().unwrap().len(), 3, "{found}");

    // A second run finds nothing to do.
    let again = online_migrations::run(&app.pool).await.unwrap();
    assert_eq!(again, online_migrations::OnlineReport::default());
}

/// The plan of `statement` with sequential scans priced out, so it shows whether an
/// index can answer the shape at all (on a table this small Postgres would scan anyway).
async fn plan_of(pool: &PgPool, mut statement: QueryBuilder<'_, sqlx::Postgres>) -> String {
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *connection)
        .await
        .unwrap();
    let rows: Vec<String> = statement
        .build_query_scalar()
        .fetch_all(&mut *connection)
        .await
        .unwrap();
    rows.join("\n")
}

#[tokio::test]
async fn filters_and_text_search_can_use_their_indexes() {
    let app = TestApp::spawn().await.unwrap();
    wait_for_the_background_run(&app.pool).await;
    // Enough files, of this org and others, for the planner to weigh the indexes: with
    // only a few hundred of the org's, scanning them all by org beats any filter index.
    sqlx::query(
        "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, metadata, created_at) \
         SELECT gen_random_uuid(), CASE WHEN n % 2 = 0 THEN $1 ELSE gen_random_uuid() END, 'reports/' || n, 'text/plain', 1, 'k', \
                jsonb_build_object('team', 'team-' || (n % 50), 'year', 2000 + n % 300), now() - n * interval '1 hour' \
         FROM generate_series(1, 20000) AS n",
    )
    .bind(app.org_id)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE files")
        .execute(&app.pool)
        .await
        .unwrap();
    let cases = [
        (
            FilterInput {
                metadata: Some(json!({"team": "legal"})),
                ..FilterInput::default()
            },
            "files_org_metadata",
        ),
        (
            FilterInput {
                metadata: Some(json!({"year": {"in": [2023, 2024]}})),
                ..FilterInput::default()
            },
            "files_org_metadata",
        ),
        (
            FilterInput {
                name_prefix: Some("reports/2024".into()),
                ..FilterInput::default()
            },
            "files_org_name",
        ),
        (
            FilterInput {
                // The last ten days: a few hundred of the org's hourly rows.
                created_after: Some(chrono::Utc::now() - chrono::Duration::days(10)),
                ..FilterInput::default()
            },
            "files_org_created",
        ),
    ];
    for (input, index) in cases {
        let filter = FileFilter::try_from(input).unwrap();
        let mut statement = QueryBuilder::new("EXPLAIN SELECT f.id FROM files f WHERE f.org_id = ");
        statement.push_bind(app.org_id);
        filter.push_conditions(&mut statement);
        let plan = plan_of(&app.pool, statement).await;
        assert!(
            plan.contains(index),
            "{filter:?} does not use {index}:\n{plan}"
        );
    }
    // Chunks of the org, a few of which hold the words: text search must use its GIN
    // index, not scan the org's chunks (on an empty table any index looks as good).
    sqlx::query(
        "INSERT INTO chunks (org_id, file_id, model_id, chunk_index, byte_start, byte_end, token_count, text_sha256, text, embedding) \
         SELECT $1, (SELECT id FROM files WHERE org_id = $1 LIMIT 1), 'm', n, 0, 1, 1, sha256(n::text::bytea), \
                CASE WHEN n % 1000 = 0 THEN 'the harbour toll' ELSE 'quarterly figures of the northern office ' || n END, '[1,0,0]' \
         FROM generate_series(1, 20000) AS n",
    )
    .bind(app.org_id)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE chunks")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut statement = QueryBuilder::new(
        "EXPLAIN SELECT c.id FROM chunks c WHERE c.search_vector @@ 'harbour | toll'::tsquery AND c.org_id = ",
    );
    statement.push_bind(app.org_id);
    let plan = plan_of(&app.pool, statement).await;
    assert!(plan.contains("chunks_search_vector"), "{plan}");
}
