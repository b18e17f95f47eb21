//! What a step costs in Postgres round trips, counted by a proxy between the real worker
//! and Postgres (`testkit::pg_counter`), so the cost cannot creep back up unnoticed.

use std::time::{Duration, Instant};

use serde_json::json;
use testkit::pg_counter::RoundTripCounter;
use testkit::scripted::{ChatReply, ScriptedChat};
use testkit::{TestApp, TestOptions};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");
const RUN: Duration = Duration::from_secs(60);
/// What a step with one read-only tool call may cost in Postgres statements, besides the
/// model call: the tool's read and the step's commit.
const MAX_STATEMENTS_BESIDES_THE_MODEL: u64 = 2;
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
    // Heartbeats run at half the lease or the visibility timeout: none in this test.
    let app = TestApp::spawn_with(TestOptions {
        visibility_timeout_secs: 120,
        ..TestOptions::default()
    })
    .await
    .unwrap();
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
    let mut quiet_waits = 0;
    for step in 0..=reading_steps {
        model_asked_for(&chat, step).await;
        let when_asked = (counter.statements(), counter.pings());
        tokio::time::sleep(MODEL_LATENCY / 2).await;
        if counter.round_trips() == when_asked.0 + when_asked.1 {
            quiet_waits += 1;
        }
        at_model_call.push(when_asked);
    }
    let done = app
        .wait_for_execution(id, &["completed", "failed", "cancelled"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["step"], reading_steps as i64 + 1, "{done}");

    // While the model answers, the worker does not poll Postgres for a cancel: a poll
    // (every 100-200 ms before) would show in every wait. The worker's own background
    // work (pool upkeep, heartbeats) may touch one wait now and then.
    assert!(
        quiet_waits >= reading_steps,
        "only {quiet_waits} of {} waits for the model saw no Postgres round trip",
        reading_steps + 1
    );
    // Between two model calls: the tool's read and the step's commit. The step's own
    // cost (head read, model call, commit) is within the three round trips asked for:
    // the head is read only when a wake says something changed. The first step also
    // prepares each statement (one more round trip each): skip it.
    let between = |pick: fn(&(u64, u64)) -> u64| -> Vec<u64> {
        let mut counts: Vec<u64> = at_model_call
            .windows(2)
            .skip(1)
            .map(|window| pick(&window[1]) - pick(&window[0]))
            .collect();
        counts.sort_unstable();
        counts
    };
    let statements = between(|counts| counts.0);
    let pings = between(|counts| counts.1);
    let typical = statements[statements.len() / 2];
    // Before this bound a step cost about 10 round trips.
    assert!(
        (1..=MAX_STATEMENTS_BESIDES_THE_MODEL).contains(&typical),
        "a step typically ran {typical} Postgres statements besides the model call (per step: {statements:?}; counts at each model call: {at_model_call:?})"
    );
    // Besides the statements, sqlx pings each connection that goes back to the pool,
    // after the caller has its answer: at most one per statement, never a poll.
    let typical_pings = pings[pings.len() / 2];
    assert!(
        typical_pings <= typical,
        "a step typically cost {typical_pings} pings for {typical} statements (per step: {pings:?})"
    );
}
