//! Schedules: the API, the actions, and exactly-once fires across schedulers.

use std::sync::Arc;
use std::time::Duration;

use api_lite::scheduler::Scheduler;
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use shared::schedules::{self as scheduler, ActionContext};
use sqlx::PgPool;
use testkit::{TestApp, TestOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// An app whose own api-lite runs no scheduler, so the test decides which ones run.
async fn app_without_scheduler() -> anyhow::Result<TestApp> {
    TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(|settings| settings.api.scheduler_enabled = false)),
        ..TestOptions::default()
    })
    .await
}

async fn insert_file(
    pool: &PgPool,
    org_id: Uuid,
    status: &str,
    error_class: Option<&str>,
    model: Option<&str>,
    extractor_version: Option<i32>,
) -> anyhow::Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, status, error_class, error_code, embedding_model, extractor_version) \
         VALUES ($1, $2, 'doc.txt', 'text/plain', 10, 'k', $3, $4, CASE WHEN $4 IS NULL THEN NULL ELSE 'some_error' END, $5, $6)",
    )
    .bind(id)
    .bind(org_id)
    .bind(status)
    .bind(error_class)
    .bind(model)
    .bind(extractor_version)
    .execute(pool)
    .await?;
    Ok(id)
}

async fn status_of(pool: &PgPool, id: Uuid) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT status FROM files WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await?)
}

/// How many messages for this job reached the queue, once the outbox relay is done.
async fn enqueued_messages(app: &TestApp, id: Uuid) -> anyhow::Result<u64> {
    testkit::wait_until(Duration::from_secs(15), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE body LIKE '%' || $1 || '%'")
            .bind(id.to_string())
            .fetch_one(&app.pool)
            .await
            .is_ok_and(|pending| pending == 0)
    })
    .await?;
    Ok(app.queue.depth().await?.visible)
}

async fn create_schedule(app: &TestApp, token: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    app.post_as("/v1/ops/schedules", body, token).await
}

/// An every-minute `retry_transient` schedule, backdated as if created `age` ago
/// (a Postgres interval such as `'10 minutes'`).
async fn every_minute_schedule_created(app: &TestApp, age: &str) -> anyhow::Result<()> {
    let (status, created) = create_schedule(
        app,
        &app.ops_token("alice"),
        json!({"name": "every-minute", "cron": "* * * * *", "action": "retry_transient"}),
    )
    .await?;
    anyhow::ensure!(status == 201, "{created}");
    sqlx::query("UPDATE schedules SET created_at = now() - $1::interval")
        .bind(age)
        .execute(&app.pool)
        .await?;
    Ok(())
}

fn context() -> ActionContext {
    ActionContext {
        default_model: "all-minilm-l6-v2".into(),
        extractor_version: shared::EXTRACTOR_VERSION as i32,
    }
}

#[tokio::test]
async fn schedules_are_validated_listed_run_and_removed_with_an_audit_trail() -> anyhow::Result<()>
{
    let app = app_without_scheduler().await?;
    let ops = app.ops_token("alice");
    let (status, body) = create_schedule(
        &app,
        &ops,
        json!({"name": "nightly", "cron": "0 3 * *", "action": "retry_transient"}),
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_cron");
    let (status, body) = create_schedule(
        &app,
        &ops,
        json!({"name": "nightly", "cron": "0 3 * * *", "action": "drop_tables"}),
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_action");
    let (status, body) = create_schedule(
        &app,
        &ops,
        json!({"name": "nightly", "cron": "0 3 * * *", "action": "retry_transient", "filter": {"status": "x"}}),
    )
    .await?;
    assert_eq!(status, 422, "{body}");
    let (status, body) = create_schedule(
        &app,
        &app.token,
        json!({"name": "nightly", "cron": "0 3 * * *", "action": "retry_transient"}),
    )
    .await?;
    assert_eq!(status, 403, "an org token cannot manage schedules: {body}");

    let (status, created) = create_schedule(
        &app,
        &ops,
        json!({"name": "nightly", "cron": "0 3 * * *", "action": "retry_transient", "filter": {"org_id": app.org_id}}),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["created_by"], "alice");
    assert!(created["last_fire"].is_null());
    let next: chrono::DateTime<Utc> = created["next_fire_at"].as_str().unwrap().parse()?;
    assert!(next > Utc::now() && next - Utc::now() <= TimeDelta::hours(24));
    assert_eq!(
        next.format("%H:%M:%S").to_string(),
        "03:00:00",
        "cron is UTC"
    );
    let (status, body) = create_schedule(
        &app,
        &ops,
        json!({"name": "nightly", "cron": "0 4 * * *", "action": "reembed"}),
    )
    .await?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "duplicate_name");

    let failed = insert_file(
        &app.pool,
        app.org_id,
        "failed",
        Some("transient"),
        None,
        None,
    )
    .await?;
    let id = created["id"].as_str().unwrap();
    let (status, body) = app
        .post_as(&format!("/v1/ops/schedules/{id}/run"), json!({}), &ops)
        .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["fire"]["manual"], true);
    assert_eq!(body["fire"]["affected"], 1);
    assert_eq!(status_of(&app.pool, failed).await?, "queued");

    let (status, body) = app.get_as("/v1/ops/schedules", &ops).await?;
    assert_eq!(status, 200);
    assert_eq!(body["schedules"][0]["last_fire"]["affected"], 1, "{body}");

    let removed = app
        .http
        .delete(app.url(&format!("/v1/ops/schedules/{id}")))
        .bearer_auth(&ops)
        .send()
        .await?;
    assert_eq!(removed.status(), 204);
    let again = app
        .http
        .delete(app.url(&format!("/v1/ops/schedules/{id}")))
        .bearer_auth(&ops)
        .send()
        .await?;
    assert_eq!(again.status(), 404);

    let (_, audit) = app.get_as("/v1/ops/audit", &ops).await?;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["schedule.remove", "schedule.fire", "schedule.create"]
    );
    Ok(())
}

#[tokio::test]
async fn each_action_picks_only_its_files() -> anyhow::Result<()> {
    let app = app_without_scheduler().await?;
    let ops = app.ops_token("alice");
    let other_org = Uuid::now_v7();
    let current = shared::EXTRACTOR_VERSION as i32;
    let old_model = insert_file(
        &app.pool,
        app.org_id,
        "ready",
        None,
        Some("openai:old@8"),
        Some(current),
    )
    .await?;
    let old_extractor = insert_file(
        &app.pool,
        app.org_id,
        "ready",
        None,
        Some("all-minilm-l6-v2"),
        Some(current - 1),
    )
    .await?;
    let up_to_date = insert_file(
        &app.pool,
        app.org_id,
        "ready",
        None,
        Some("all-minilm-l6-v2"),
        Some(current),
    )
    .await?;
    let transient = insert_file(
        &app.pool,
        app.org_id,
        "dead_lettered",
        Some("transient"),
        None,
        None,
    )
    .await?;
    let permanent = insert_file(
        &app.pool,
        app.org_id,
        "failed",
        Some("permanent"),
        None,
        None,
    )
    .await?;
    let elsewhere = insert_file(
        &app.pool,
        other_org,
        "failed",
        Some("transient"),
        None,
        None,
    )
    .await?;

    let run = async |name: &str, action: &str, filter: Value| -> anyhow::Result<i64> {
        let (status, created) = create_schedule(
            &app,
            &ops,
            json!({"name": name, "cron": "0 3 * * *", "action": action, "filter": filter}),
        )
        .await?;
        anyhow::ensure!(status == 201, "{created}");
        let (status, body) = app
            .post_as(
                &format!("/v1/ops/schedules/{}/run", created["id"].as_str().unwrap()),
                json!({}),
                &ops,
            )
            .await?;
        anyhow::ensure!(status == 200, "{body}");
        Ok(body["fire"]["affected"].as_i64().unwrap())
    };
    assert_eq!(run("reembed", "reembed", json!({})).await?, 1);
    assert_eq!(status_of(&app.pool, old_model).await?, "queued");
    assert_eq!(run("reextract", "reextract", json!({})).await?, 1);
    assert_eq!(status_of(&app.pool, old_extractor).await?, "queued");
    assert_eq!(
        run(
            "retry-mine",
            "retry_transient",
            json!({"org_id": app.org_id})
        )
        .await?,
        1
    );
    assert_eq!(status_of(&app.pool, transient).await?, "queued");
    assert_eq!(
        status_of(&app.pool, elsewhere).await?,
        "failed",
        "other orgs are filtered out"
    );
    assert_eq!(
        run("retry-all", "retry_transient", json!({"limit": 5})).await?,
        1
    );
    assert_eq!(status_of(&app.pool, elsewhere).await?, "queued");
    assert_eq!(
        status_of(&app.pool, permanent).await?,
        "failed",
        "permanent errors stay"
    );
    assert_eq!(status_of(&app.pool, up_to_date).await?, "ready");
    Ok(())
}

#[tokio::test]
async fn concurrent_fires_of_one_tick_run_the_action_once() -> anyhow::Result<()> {
    let app = app_without_scheduler().await?;
    let failed = insert_file(
        &app.pool,
        app.org_id,
        "failed",
        Some("transient"),
        None,
        None,
    )
    .await?;
    every_minute_schedule_created(&app, "10 minutes").await?;
    // Eight "leaders" at once, as after a failover where the old leader has not noticed
    // yet: every one of them sees the same due tick.
    let now = Utc::now();
    let mut tasks = Vec::new();
    for replica in 0..8 {
        let pool = app.pool.clone();
        tasks.push(tokio::spawn(async move {
            scheduler::fire_due(&pool, now, &format!("replica-{replica}"), &context()).await
        }));
    }
    let mut fires = 0;
    for task in tasks {
        fires += task.await??.len();
    }
    assert_eq!(fires, 1, "exactly one replica fires the tick");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM schedule_fires")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(rows, 1);
    let audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'schedule.fire'")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(audits, 1);
    assert_eq!(status_of(&app.pool, failed).await?, "queued");
    assert_eq!(
        enqueued_messages(&app, failed).await?,
        1,
        "the file was enqueued once"
    );
    Ok(())
}

#[tokio::test]
async fn ticks_missed_during_downtime_are_caught_up_once() -> anyhow::Result<()> {
    let app = app_without_scheduler().await?;
    // Created two hours ago, and no leader ran since: 120 ticks were missed.
    every_minute_schedule_created(&app, "2 hours").await?;
    let now = Utc::now();
    let fires = scheduler::fire_due(&app.pool, now, "replica-a", &context()).await?;
    assert_eq!(fires.len(), 1, "one catch-up fire, not 120");
    let latest_minute = now.timestamp() - now.timestamp() % 60;
    assert_eq!(
        fires[0].fire_time.timestamp(),
        latest_minute,
        "the latest missed tick"
    );
    assert!(!fires[0].manual);
    let again = scheduler::fire_due(&app.pool, now, "replica-a", &context()).await?;
    assert!(again.is_empty(), "a tick fires once");
    let next_minute = now + TimeDelta::seconds(61);
    let later = scheduler::fire_due(&app.pool, next_minute, "replica-b", &context()).await?;
    assert_eq!(later.len(), 1, "the next tick fires on its own");
    Ok(())
}

async fn fires(pool: &PgPool) -> anyhow::Result<Vec<(chrono::DateTime<Utc>, String)>> {
    Ok(
        sqlx::query_as("SELECT fire_time, fired_by FROM schedule_fires ORDER BY fire_time")
            .fetch_all(pool)
            .await?,
    )
}

#[tokio::test]
async fn two_schedulers_fire_each_tick_once_and_the_follower_takes_over() -> anyhow::Result<()> {
    let app = app_without_scheduler().await?;
    let ops = app.ops_token("alice");
    let (status, created) = create_schedule(
        &app,
        &ops,
        json!({"name": "every-second", "cron": "* * * * * *", "action": "retry_transient"}),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    let failed = insert_file(
        &app.pool,
        app.org_id,
        "failed",
        Some("transient"),
        None,
        None,
    )
    .await?;

    let start = |name: &str| {
        let shutdown = CancellationToken::new();
        let scheduler = Scheduler {
            pool: app.pool.clone(),
            instance: name.to_string(),
            tick: Duration::from_millis(100),
            context: context(),
        };
        tokio::spawn(scheduler.run(shutdown.clone()));
        shutdown
    };
    let replica_a = start("replica-a");
    let replica_b = start("replica-b");
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let first = fires(&app.pool).await?;
    assert!(first.len() >= 2, "a fire every second: {first:?}");
    let leaders: std::collections::HashSet<&str> =
        first.iter().map(|(_, by)| by.as_str()).collect();
    assert_eq!(
        leaders.len(),
        1,
        "one leader fires while both run: {first:?}"
    );
    let leader = *leaders.iter().next().unwrap();

    // The leader stops; its connection closes, and the follower takes the lock.
    if leader == "replica-a" {
        replica_a.cancel();
    } else {
        replica_b.cancel();
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
    replica_a.cancel();
    replica_b.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let all = fires(&app.pool).await?;
    let after: Vec<_> = all[first.len()..].to_vec();
    assert!(
        !after.is_empty(),
        "the follower fires after the leader left: {all:?}"
    );
    assert!(
        after.iter().all(|(_, by)| by != leader),
        "only the new leader fires: {all:?}"
    );
    for pair in all.windows(2) {
        assert!(pair[0].0 < pair[1].0, "each tick once, in order: {all:?}");
        assert_eq!(
            pair[0].0.timestamp_subsec_millis(),
            0,
            "fires land on ticks"
        );
    }
    let audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'schedule.fire'")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(audits as usize, all.len(), "one action per fire");
    let affected: i64 = sqlx::query_scalar("SELECT COALESCE(sum(affected), 0) FROM schedule_fires")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(
        affected, 1,
        "the failed file was retried by exactly one fire"
    );
    assert_eq!(status_of(&app.pool, failed).await?, "queued");
    Ok(())
}
