//! What a step costs in Postgres round trips, counted by a proxy between the real worker
//! and Postgres (`testkit::pg_counter`), so the cost cannot creep back up unnoticed.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::pg_counter::RoundTripCounter;
use testkit::scripted::{ChatReply, ScriptedChat};
use testkit::{TestApp, wait_until};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");
const RUN: Duration = Duration::from_secs(60);
/// Long enough to look at the counter while the worker waits for the model.
const MODEL_LATENCY: Duration = Duration::from_millis(700);

/// Waits until the model has been asked for `step` (each step asks once here).
async fn model_asked_for(chat: &ScriptedChat, step: usize) {
    let deadline = Instant::now() + RUN;
    while chat.requests_for_step(step) == 0 {
        assert!(
            Instant::now() < deadline,
            "the model was never asked for step {step}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn start(app: &TestApp) -> Uuid {
    let node = app
        .create_node("Counted", "Read the context a few times.", json!({}))
        .await
        .unwrap();
    let (status, execution) = app.execute(node, None, json!({})).await.unwrap();
    assert_eq!(status, 202, "{execution}");
    execution["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_step_costs_the_model_call_a_tool_read_and_one_commit_and_nothing_while_it_waits() {
    let app = TestApp::spawn().await.unwrap();
    let counter = RoundTripCounter::start(&app.database_url).await.unwrap();
    let reading_steps = 5;
    let mut script = vec![
        ChatReply::slow(
            MODEL_LATENCY,
            ChatReply::tool("get_node_context", json!({}))
        );
        reading_steps
    ];
    script.push(ChatReply::slow(MODEL_LATENCY, ChatReply::text("done")));
    let chat = ScriptedChat::start(script).await.unwrap();
    let database_url = counter.database_url();
    let _worker = app
        .spawn_agent(
            WORKER,
            &chat,
            &[
                ("GLASSBOX_DATABASE__URL", database_url.as_str()),
                // No lease renewal inside the windows counted here.
                ("GLASSBOX_AGENT_WORKER__LEASE_SECS", "120"),
                // One connection for the LISTEN, one for everything else: each statement
                // is prepared once, in the first step, and only executed after that.
                ("GLASSBOX_DATABASE__MAX_CONNECTIONS", "2"),
            ],
        )
        .unwrap();
    let id = start(&app).await;

    let mut at_model_call = Vec::new();
    for step in 0..=reading_steps {
        model_asked_for(&chat, step).await;
        let when_asked = counter.round_trips();
        // While the model answers, the worker does not poll Postgres for a cancel.
        tokio::time::sleep(MODEL_LATENCY / 2).await;
        assert_eq!(
            counter.round_trips(),
            when_asked,
            "the worker talked to Postgres while it waited for the model at step {step}"
        );
        at_model_call.push(when_asked);
    }
    let done = app
        .wait_for_execution(id, &["completed", "failed", "cancelled"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["step"], reading_steps as i64 + 1, "{done}");

    // Between two model calls: the tool's read and the step's commit. The step's own
    // cost (head read, model call, commit) is within the three round trips asked for.
    // The first step also prepares each statement (one more round trip each): skip it.
    for (step, window) in at_model_call.windows(2).enumerate().skip(1) {
        let round_trips = window[1] - window[0];
        assert!(
            (1..=2).contains(&round_trips),
            "step {step} cost {round_trips} Postgres round trips besides the model call; expected the tool read and the commit"
        );
    }
}
