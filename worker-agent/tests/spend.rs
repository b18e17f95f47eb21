//! What a run may spend: budgets lowered to the server's ceiling, models only from the
//! allowlist and with a price, and `max_tokens` on every model call, by the API and by
//! the worker alike (a row written by anything else cannot spend more either).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::scripted::{ChatReply, ScriptedChat};
use testkit::{TestApp, TestOptions};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");
const RUN: Duration = Duration::from_secs(60);

/// An execution row written straight to Postgres (not through the API) and its message.
async fn insert_run(app: &TestApp, model: &str, budget: Value) -> Uuid {
    let node = app.create_node("Task", "Do it.", json!({})).await.unwrap();
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO executions (id, org_id, node_id, model, budget, queued_at) VALUES ($1, $2, $3, $4, $5, now())",
    )
    .bind(id)
    .bind(app.org_id)
    .bind(node)
    .bind(model)
    .bind(budget)
    .execute(&app.pool)
    .await
    .unwrap();
    let queue = app.agent_queue().await.unwrap();
    let message = shared::queue::JobMessage::new(shared::queue::JobKind::AgentRun, id, app.org_id);
    queue.send(&message.to_body()).await.unwrap();
    id
}

#[tokio::test]
async fn the_api_lowers_budgets_to_the_ceiling_and_refuses_models_off_the_allowlist() {
    let app = TestApp::spawn_with(TestOptions {
        configure: Some(Arc::new(|settings| {
            settings
                .agent_worker
                .allowed_models
                .push("free-model".into());
        })),
        ..TestOptions::default()
    })
    .await
    .unwrap();
    let node = app.create_node("Task", "Do it.", json!({})).await.unwrap();
    let ceiling = app.settings.agent_worker.budget_ceiling;
    let (status, execution) = app
        .execute(
            node,
            None,
            json!({ "budget": { "max_steps": 1_000_000, "max_cost_usd": 1e6, "max_tokens": 50 } }),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{execution}");
    assert_eq!(execution["budget"]["max_steps"], ceiling.max_steps);
    assert_eq!(execution["budget"]["max_cost_usd"], ceiling.max_cost_usd);
    assert_eq!(
        execution["budget"]["max_tokens"], 50,
        "limits under the ceiling stay"
    );

    let (status, refused) = app
        .execute(node, None, json!({ "model": "gpt-9-ultra" }))
        .await
        .unwrap();
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "model_not_allowed");
    let (status, refused) = app
        .execute(node, None, json!({ "model": "free-model" }))
        .await
        .unwrap();
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "model_unpriced");
}

#[tokio::test]
async fn the_worker_refuses_a_run_on_a_model_it_may_not_use_and_clamps_the_rest() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![ChatReply::tool("get_node_context", json!({}))])
        .await
        .unwrap();
    let _worker = app
        .spawn_agent(
            WORKER,
            &chat,
            &[
                ("GLASSBOX_AGENT_WORKER__BUDGET_CEILING__MAX_STEPS", "2"),
                ("GLASSBOX_AGENT_WORKER__DEFAULT_MAX_STEPS", "2"),
            ],
        )
        .unwrap();
    let unlisted = insert_run(&app, "gpt-9-ultra", json!({})).await;
    let refused = app
        .wait_for_execution(unlisted, &["failed", "completed"], RUN)
        .await
        .unwrap();
    assert_eq!(refused["error_code"], "model_not_allowed", "{refused}");
    assert_eq!(refused["error_class"], "permanent");
    assert_eq!(chat.requests().len(), 0, "no model was called");

    let greedy = insert_run(&app, "gpt-4o-mini", json!({ "max_steps": 1_000_000 })).await;
    let stopped = app
        .wait_for_execution(greedy, &["failed", "completed"], RUN)
        .await
        .unwrap();
    assert_eq!(stopped["error_code"], "budget_steps_exceeded", "{stopped}");
    assert_eq!(stopped["step"], 2, "the ceiling, not the row's budget");
}

#[tokio::test]
async fn every_model_call_carries_max_tokens_within_what_the_budget_has_left() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![ChatReply::tool("get_node_context", json!({}))])
        .await
        .unwrap();
    let _worker = app
        .spawn_agent(
            WORKER,
            &chat,
            &[("GLASSBOX_AGENT_WORKER__MAX_OUTPUT_TOKENS", "200")],
        )
        .unwrap();
    let node = app.create_node("Task", "Do it.", json!({})).await.unwrap();
    // Each scripted call spends 120 tokens (100 in, 20 out).
    let (status, execution) = app
        .execute(node, None, json!({ "budget": { "max_tokens": 250 } }))
        .await
        .unwrap();
    assert_eq!(status, 202, "{execution}");
    let id: Uuid = execution["id"].as_str().unwrap().parse().unwrap();
    let failed = app
        .wait_for_execution(id, &["failed", "completed"], RUN)
        .await
        .unwrap();
    assert_eq!(failed["error_code"], "budget_tokens_exceeded", "{failed}");
    let asked: Vec<Value> = chat
        .requests()
        .iter()
        .map(|request| request["max_tokens"].clone())
        .collect();
    assert_eq!(
        asked,
        [json!(200), json!(130), json!(10)],
        "the per-call cap, then what is left of 250"
    );
}
