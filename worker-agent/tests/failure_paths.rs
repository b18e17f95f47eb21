//! Failure paths beyond the happy run: a model that stays down, the wall-time budget
//! cutting a slow call, checkpoint size and retention, and the sweeper for lost runs.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::scripted::{ChatReply, ScriptedChat};
use testkit::{TestApp, TestOptions, WorkerProcess};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");
const RUN: Duration = Duration::from_secs(60);

fn spawn_agent(app: &TestApp, chat: &ScriptedChat, extra: &[(&str, &str)]) -> WorkerProcess {
    app.spawn_agent(WORKER, chat, extra).unwrap()
}

async fn start(app: &TestApp, body: Value) -> Uuid {
    let node = app.create_node("Task", "Do it.", json!({})).await.unwrap();
    let (status, execution) = app.execute(node, None, body).await.unwrap();
    assert_eq!(status, 202, "{execution}");
    execution["id"].as_str().unwrap().parse().unwrap()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|event| event["kind"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_model_that_stays_down_is_retried_then_dead_lettered() {
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 3,
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let chat = ScriptedChat::start(vec![ChatReply::Status(500)])
        .await
        .unwrap();
    let _worker = spawn_agent(&app, &chat, &[("GLASSBOX_AGENT_WORKER__MAX_RETRIES", "1")]);
    let id = start(&app, json!({})).await;
    let failed = app
        .wait_for_execution(id, &["failed", "completed"], RUN)
        .await
        .unwrap();
    assert_eq!(failed["error_class"], "transient", "{failed}");
    assert_eq!(failed["error_code"], "model_unavailable");
    assert_eq!(
        failed["attempts"], 3,
        "one attempt per receive, up to maxReceiveCount"
    );
    assert_eq!(
        chat.requests_for_step(0),
        6,
        "two requests (one retry) per attempt"
    );
    let events = kinds(&app.trace(id).await.unwrap());
    assert_eq!(
        events,
        [
            "queued",
            "claimed",
            "retrying",
            "claimed",
            "retrying",
            "claimed",
            "dead_lettered"
        ],
        "nothing else was committed"
    );
    assert_eq!(failed["tokens_in"], 0);
}

#[tokio::test]
async fn the_wall_time_budget_cuts_a_slow_model_call() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![ChatReply::slow(
        Duration::from_secs(20),
        ChatReply::text("too late"),
    )])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let id = start(&app, json!({ "budget": { "max_wall_secs": 1 } })).await;
    let failed = app
        .wait_for_execution(id, &["failed", "completed"], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        failed["error_code"], "budget_wall_time_exceeded",
        "{failed}"
    );
    assert_eq!(failed["step"], 0);
}

#[tokio::test]
async fn checkpoints_grow_by_the_step_and_old_ones_are_purged() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("get_node_context", json!({})),
        ChatReply::tool("get_node_context", json!({})),
        ChatReply::tool("get_node_context", json!({})),
        ChatReply::tool("get_node_context", json!({})),
        ChatReply::tool("get_node_context", json!({})),
        ChatReply::tool("get_node_context", json!({})),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let id = start(&app, json!({})).await;
    app.wait_for_execution(id, &["completed"], RUN)
        .await
        .unwrap();
    let sizes: Vec<i32> = sqlx::query_scalar(
        "SELECT octet_length(messages::text) FROM execution_steps WHERE execution_id = $1 ORDER BY step",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(sizes.len(), 7);
    // Each row holds only its step's messages: equal steps store equal sizes, whatever
    // their position in the run (a full-state checkpoint would grow every step).
    let tool_steps = &sizes[..6];
    let (smallest, largest) = (
        *tool_steps.iter().min().unwrap(),
        *tool_steps.iter().max().unwrap(),
    );
    assert!(largest - smallest < 16, "per-step sizes {sizes:?}");
    assert!(largest < 2048, "per-step sizes {sizes:?}");

    let retention = Duration::from_secs(30 * 24 * 3600);
    assert_eq!(
        worker_agent::retention::purge_once(&app.pool, retention)
            .await
            .unwrap(),
        0,
        "a fresh run keeps its checkpoint"
    );
    sqlx::query("UPDATE executions SET finished_at = now() - interval '31 days' WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        worker_agent::retention::purge_once(&app.pool, retention)
            .await
            .unwrap(),
        7
    );
    let (status, execution) = app.get(&format!("/v1/executions/{id}")).await.unwrap();
    assert_eq!(
        (status, execution["status"].as_str()),
        (200, Some("completed"))
    );
    assert!(!app.trace(id).await.unwrap().is_empty(), "the trace stays");
}

#[tokio::test]
async fn the_sweeper_re_enqueues_a_run_whose_message_was_lost() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![ChatReply::text("done")])
        .await
        .unwrap();
    let id = start(&app, json!({})).await;
    // Lose the message: drain the agent queue before any worker sees it.
    let queue = app.agent_queue().await.unwrap();
    testkit::wait_until(Duration::from_secs(10), || async {
        let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        outbox == 0
    })
    .await
    .unwrap();
    for delivery in queue.receive(10, Duration::from_secs(1)).await.unwrap() {
        queue.delete(&delivery).await.unwrap();
    }
    let _worker = spawn_agent(&app, &chat, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, still) = app.get(&format!("/v1/executions/{id}")).await.unwrap();
    assert_eq!(
        still["status"], "queued",
        "without its message nobody runs it"
    );

    let requeued = api_lite::sweeper::sweep_executions_once(&app.pool, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(requeued, 1);
    let done = app
        .wait_for_execution(id, &["completed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["result"], "done");
}

#[tokio::test]
async fn a_run_backing_off_after_a_transient_failure_is_not_swept_again() {
    // Long backoffs, so the retry is still waiting when the sweeper looks.
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(std::sync::Arc::new(|settings| {
            settings.retry.base_delay_secs = 30.0;
            settings.retry.max_delay_secs = 60.0;
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let chat = ScriptedChat::start(vec![ChatReply::Status(500)])
        .await
        .unwrap();
    let _worker = spawn_agent(&app, &chat, &[("GLASSBOX_AGENT_WORKER__MAX_RETRIES", "0")]);
    let id = start(&app, json!({})).await;
    testkit::wait_until(RUN, || async {
        app.trace(id)
            .await
            .unwrap()
            .iter()
            .any(|event| event["kind"] == "retrying")
    })
    .await
    .unwrap();
    // Even a sweeper that re-enqueues anything queued at all leaves a run alone while
    // its message waits out the backoff: a second message would only race it.
    let requeued = api_lite::sweeper::sweep_executions_once(&app.pool, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(requeued, 0, "the backing-off run was re-enqueued");
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(outbox, 0);
}

#[tokio::test]
async fn a_dead_lettered_run_moved_back_by_plain_sqs_runs_again() {
    // One allowed receive, no retries inside it: the first failure dead-letters the run.
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 1,
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let chat = ScriptedChat::start_with_attempts(vec![vec![
        ChatReply::Status(503),
        ChatReply::text("done"),
    ]])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[("GLASSBOX_AGENT_WORKER__MAX_RETRIES", "0")]);
    let id = start(&app, json!({})).await;
    let failed = app
        .wait_for_execution(id, &["failed", "completed"], RUN)
        .await
        .unwrap();
    assert_eq!(failed["error_class"], "transient", "{failed}");

    // The SQS console or StartMessageMoveTask moves the message back; api-lite never
    // hears of it.
    let queue = app.agent_queue().await.unwrap();
    let mut moved = false;
    for _ in 0..30 {
        let letters = queue
            .receive_dead_letters(1, Duration::from_secs(30))
            .await
            .unwrap();
        if let Some(letter) = letters.first() {
            queue.move_dead_letter(letter).await.unwrap();
            moved = true;
            break;
        }
    }
    assert!(moved, "the message reached the DLQ");
    let done = app
        .wait_for_execution(id, &["completed"], Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(done["result"], "done");
    let events = kinds(&app.trace(id).await.unwrap());
    assert!(events.contains(&"redriven".to_string()), "{events:?}");
}

#[tokio::test]
async fn a_duplicate_message_of_a_busy_run_is_dropped_not_dead_lettered() {
    let app = TestApp::spawn_with(TestOptions {
        max_receive_count: 2,
        ..TestOptions::default()
    })
    .await
    .unwrap();
    // A long, healthy model call: the duplicate keeps finding the run busy.
    let chat = ScriptedChat::start(vec![ChatReply::slow(
        Duration::from_secs(10),
        ChatReply::text("done"),
    )])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let id = start(&app, json!({})).await;
    app.wait_for_execution(id, &["running"], RUN).await.unwrap();
    let queue = app.agent_queue().await.unwrap();
    let body =
        shared::queue::JobMessage::new(shared::queue::JobKind::AgentRun, id, app.org_id).to_body();
    queue.send(&body).await.unwrap();

    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let depth = queue.depth().await.unwrap();
    assert_eq!(
        depth.dead_letter_visible + depth.dead_letter_in_flight,
        0,
        "the duplicate of a healthy run reached the DLQ: {depth:?}"
    );
    assert_eq!(chat.requests_for_step(0), 1);
}
