//! Crashes and duplicate deliveries: a SIGKILLed worker's run resumes on another worker
//! from the last committed step; completed steps and tool side effects never repeat,
//! and tokens and cost are not counted twice.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::scripted::{CHAT_TOKENS_IN, CHAT_TOKENS_OUT, ChatReply, ScriptedChat};
use testkit::{TestApp, WorkerProcess, wait_until};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");
const RUN: Duration = Duration::from_secs(60);
const ALLOW_WRITES: (&str, &str) = ("GLASSBOX_AGENT_WORKER__TOOL_POLICY__WRITE_OUTPUT", "allow");

fn spawn_agent(app: &TestApp, chat: &ScriptedChat, extra: &[(&str, &str)]) -> WorkerProcess {
    let mut overrides = vec![ALLOW_WRITES];
    overrides.extend_from_slice(extra);
    app.spawn_agent(WORKER, chat, &overrides).unwrap()
}

async fn start(app: &TestApp) -> (Uuid, Uuid) {
    let node = app
        .create_node("Ledger", "Write two outputs.", json!({}))
        .await
        .unwrap();
    let (status, execution) = app.execute(node, None, json!({})).await.unwrap();
    assert_eq!(status, 202, "{execution}");
    (execution["id"].as_str().unwrap().parse().unwrap(), node)
}

/// (step, call_index, status, runs) of every ledger row.
async fn ledger(app: &TestApp, id: Uuid) -> Vec<(i32, i32, String, i32)> {
    sqlx::query_as("SELECT step, call_index, status, runs FROM tool_calls WHERE execution_id = $1 ORDER BY step, call_index")
        .bind(id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

async fn committed_steps(app: &TestApp, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM execution_steps WHERE execution_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn outputs(app: &TestApp, node: Uuid) -> Value {
    app.get(&format!("/v1/nodes/{node}")).await.unwrap().1["outputs"].clone()
}

/// Starts a run on a worker that stops after step 0's tools ran, before the commit, and
/// SIGKILLs it there. Returns the execution and its node.
async fn start_and_kill_after_the_tool_ran(app: &TestApp, chat: &ScriptedChat) -> (Uuid, Uuid) {
    let mut doomed = spawn_agent(
        app,
        chat,
        &[("GLASSBOX_AGENT_WORKER__FAILPOINT", "after_tool_calls")],
    );
    let (id, node) = start(app).await;
    wait_until(RUN, || async {
        ledger(app, id)
            .await
            .first()
            .is_some_and(|row| row.2 == "succeeded")
    })
    .await
    .unwrap();
    doomed.kill().await.unwrap();
    (id, node)
}

#[tokio::test]
async fn sigkill_between_a_tool_call_and_its_commit_does_not_repeat_the_tool() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("write_output", json!({ "key": "a", "value": 1 })),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let (id, node) = start_and_kill_after_the_tool_ran(&app, &chat).await;
    assert_eq!(
        committed_steps(&app, id).await,
        0,
        "the step had not committed"
    );

    let _survivor = spawn_agent(&app, &chat, &[]);
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        chat.requests_for_step(0),
        1,
        "the uncommitted step was redone with the model's recorded answer"
    );
    assert_eq!(chat.requests_for_step(1), 1);
    assert_eq!(
        ledger(&app, id).await,
        [(0, 0, "succeeded".to_string(), 1)],
        "the write ran once"
    );
    assert_eq!(outputs(&app, node).await, json!({ "a": 1 }));
    assert_eq!(
        done["tokens_in"],
        2 * CHAT_TOKENS_IN,
        "two model calls, each counted once"
    );
    assert_eq!(done["tokens_out"], 2 * CHAT_TOKENS_OUT);
    assert_eq!(committed_steps(&app, id).await, 2);
    let events = app.trace(id).await.unwrap();
    let model_calls = events
        .iter()
        .filter(|event| event["kind"] == "model_call")
        .count();
    assert_eq!(
        model_calls, 2,
        "one model call per step, recorded as it answered"
    );
    let replayed = events
        .iter()
        .find(|event| event["kind"] == "tool_result")
        .unwrap();
    assert_eq!(
        replayed["data"]["replayed"], true,
        "the redone step reused the ledger's result"
    );
}

#[tokio::test]
async fn sigkill_after_a_commit_resumes_at_the_next_step() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("write_output", json!({ "key": "a", "value": 1 })),
        ChatReply::tool("write_output", json!({ "key": "b", "value": 2 })),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let mut doomed = spawn_agent(
        &app,
        &chat,
        &[("GLASSBOX_AGENT_WORKER__FAILPOINT", "after_step_commit@0")],
    );
    let (id, node) = start(&app).await;
    wait_until(RUN, || async { committed_steps(&app, id).await == 1 })
        .await
        .unwrap();
    doomed.kill().await.unwrap();

    let _survivor = spawn_agent(&app, &chat, &[]);
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        chat.requests_for_step(0),
        1,
        "a committed step is never redone"
    );
    assert_eq!(chat.requests_for_step(1), 1);
    assert_eq!(chat.requests_for_step(2), 1);
    assert_eq!(
        ledger(&app, id).await,
        [
            (0, 0, "succeeded".to_string(), 1),
            (1, 0, "succeeded".to_string(), 1)
        ]
    );
    assert_eq!(outputs(&app, node).await, json!({ "a": 1, "b": 2 }));
    assert_eq!(done["tokens_in"], 3 * CHAT_TOKENS_IN);
    assert_eq!(
        done["attempts"], 2,
        "claimed by the killed worker, then the survivor"
    );
}

#[tokio::test]
async fn a_duplicate_delivery_to_two_workers_runs_each_step_once() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::slow(
            Duration::from_millis(800),
            ChatReply::tool("write_output", json!({ "key": "a", "value": 1 })),
        ),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let _first = spawn_agent(&app, &chat, &[]);
    let _second = spawn_agent(&app, &chat, &[]);
    let (id, node) = start(&app).await;
    // The same message again, as SQS may deliver it.
    let queue = app.agent_queue().await.unwrap();
    let body =
        shared::queue::JobMessage::new(shared::queue::JobKind::AgentRun, id, app.org_id).to_body();
    queue.send(&body).await.unwrap();
    queue.send(&body).await.unwrap();

    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    // Let the duplicates come back and be found finished.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        chat.requests_for_step(0),
        1,
        "one worker ran the step; the others backed off"
    );
    assert_eq!(chat.requests_for_step(1), 1);
    assert_eq!(ledger(&app, id).await, [(0, 0, "succeeded".to_string(), 1)]);
    assert_eq!(outputs(&app, node).await, json!({ "a": 1 }));
    assert_eq!(committed_steps(&app, id).await, 2);
    assert_eq!(done["tokens_in"], 2 * CHAT_TOKENS_IN);
    assert_eq!(done["attempts"], 1, "only one claim ever succeeded");
    let after: Value = app.get(&format!("/v1/executions/{id}")).await.unwrap().1;
    assert_eq!(after["status"], "completed");
}

#[tokio::test]
async fn sigkill_before_an_atomic_tool_effect_runs_it_on_the_next_worker() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("write_output", json!({ "key": "a", "value": 1 })),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let mut doomed = spawn_agent(
        &app,
        &chat,
        &[("GLASSBOX_AGENT_WORKER__FAILPOINT", "before_tool_effect")],
    );
    let (id, node) = start(&app).await;
    wait_until(RUN, || async {
        ledger(&app, id)
            .await
            .first()
            .is_some_and(|row| row.2 == "started")
    })
    .await
    .unwrap();
    doomed.kill().await.unwrap();
    assert_eq!(
        outputs(&app, node).await,
        json!({}),
        "no effect before the kill"
    );

    let _survivor = spawn_agent(&app, &chat, &[]);
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    // The write commits with its ledger entry, so `started` proves it never happened:
    // the body runs again, and the effect lands exactly once.
    assert_eq!(ledger(&app, id).await, [(0, 0, "succeeded".to_string(), 2)]);
    assert_eq!(outputs(&app, node).await, json!({ "a": 1 }));
}

#[tokio::test]
async fn sigterm_finishes_the_step_in_flight_and_hands_the_run_back() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::slow(
            Duration::from_millis(1500),
            ChatReply::tool("write_output", json!({ "key": "a", "value": 1 })),
        ),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let mut stopping = spawn_agent(&app, &chat, &[]);
    let (id, node) = start(&app).await;
    wait_until(RUN, || async { chat.requests_for_step(0) == 1 })
        .await
        .unwrap();
    let exit = stopping.terminate(Duration::from_secs(20)).await.unwrap();
    assert!(exit.success(), "{exit:?}");
    let handed_back = app
        .wait_for_execution(id, &["queued"], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        handed_back["step"], 1,
        "the step in flight committed before the exit"
    );

    let _next = spawn_agent(&app, &chat, &[]);
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        chat.requests_for_step(0),
        1,
        "the committed step was not redone"
    );
    assert_eq!(ledger(&app, id).await, [(0, 0, "succeeded".to_string(), 1)]);
    assert_eq!(outputs(&app, node).await, json!({ "a": 1 }));
    let kinds: Vec<String> = app
        .trace(id)
        .await
        .unwrap()
        .iter()
        .map(|event| event["kind"].as_str().unwrap().to_string())
        .collect();
    assert!(kinds.contains(&"released".to_string()), "{kinds:?}");
}

#[tokio::test]
async fn a_step_redone_after_a_crash_keeps_each_tool_result_with_its_own_call() {
    // Asked again, the model would make a different call at the same position.
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start_with_attempts(vec![
        vec![
            ChatReply::tool("write_output", json!({ "key": "a", "value": 1 })),
            ChatReply::tool("write_output", json!({ "key": "b", "value": 2 })),
        ],
        vec![ChatReply::text("done")],
    ])
    .await
    .unwrap();
    let (id, node) = start_and_kill_after_the_tool_ran(&app, &chat).await;
    let spent: i64 = sqlx::query_scalar("SELECT tokens_in FROM executions WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        spent, CHAT_TOKENS_IN as i64,
        "the model call is paid for although its step never committed"
    );

    let _survivor = spawn_agent(&app, &chat, &[]);
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    let step_zero: Value = sqlx::query_scalar(
        "SELECT messages FROM execution_steps WHERE execution_id = $1 AND step = 0",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let messages = step_zero.as_array().unwrap();
    let call = &messages[0]["tool_calls"][0];
    let called_key = serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap())
        .unwrap()["key"]
        .clone();
    let result: Value = serde_json::from_str(messages[1]["content"].as_str().unwrap()).unwrap();
    assert_eq!(
        result["written"], called_key,
        "the committed result belongs to the committed call: {step_zero}"
    );
    assert_eq!(
        outputs(&app, node).await[called_key.as_str().unwrap()],
        json!(if called_key == "a" { 1 } else { 2 }),
        "the call the conversation shows took effect"
    );
}
