//! The clock tick EventBridge Scheduler sends on AWS: worker-files fires the due Postgres
//! schedules, and a tick delivered twice fires each (schedule, fire time) once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testkit::{TestApp, TestOptions, wait_until};

const WORKER: &str = env!("CARGO_BIN_EXE_worker-files");

#[tokio::test]
async fn a_schedule_tick_on_file_jobs_fires_due_schedules_once() {
    // No api-lite leader: the ticks are the only clock.
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(|settings| settings.api.scheduler_enabled = false)),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let ops = app.ops_token("alice");
    let (status, schedule) = app
        .post_as(
            "/v1/ops/schedules",
            json!({"name": "hourly-retry", "cron": "0 * * * *", "action": "retry_transient"}),
            &ops,
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{schedule}");
    sqlx::query("UPDATE schedules SET created_at = now() - interval '3 hours'")
        .execute(&app.pool)
        .await
        .unwrap();

    // The body cdk/lib/settings.ts gives EventBridge Scheduler, sent twice (a retry).
    let tick = json!({
        "v": 1,
        "kind": "schedule.tick",
        "job_id": "00000000-0000-0000-0000-000000000000",
        "org_id": "00000000-0000-0000-0000-000000000000",
    })
    .to_string();
    for _ in 0..2 {
        app.queue.send(&tick).await.unwrap();
    }
    let _worker = app.spawn_worker(WORKER, &[]).unwrap();
    wait_until(Duration::from_secs(30), || async {
        app.queue
            .depth()
            .await
            .is_ok_and(|depth| depth.visible + depth.in_flight == 0)
    })
    .await
    .unwrap();

    let fires: Vec<(String, bool)> = sqlx::query_as("SELECT fired_by, manual FROM schedule_fires")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(fires.len(), 1, "two ticks, one catch-up fire: {fires:?}");
    assert!(fires[0].0.starts_with("worker-files:"), "{fires:?}");
    assert!(!fires[0].1);
    let depth = app.queue.depth().await.unwrap();
    assert_eq!(
        depth.dead_letter_visible, 0,
        "ticks are not poison: {depth:?}"
    );
}
