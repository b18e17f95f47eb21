//! Agent runs end to end: api-lite in process, the real worker-agent binary, Postgres
//! and moto, and a scripted OpenAI-compatible chat server as the model.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::scripted::{CHAT_TOKENS_IN, CHAT_TOKENS_OUT, ChatReply, ScriptedChat};
use testkit::{TestApp, WorkerProcess, wait_until};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");
const RUN: Duration = Duration::from_secs(60);

fn spawn_agent(app: &TestApp, chat: &ScriptedChat, extra: &[(&str, &str)]) -> WorkerProcess {
    app.spawn_agent(WORKER, chat, extra).unwrap()
}

async fn start(app: &TestApp, body: Value) -> Uuid {
    let node = app
        .create_node(
            "Refunds",
            "Find the refund window and record it.",
            json!({ "customer": "ACME" }),
        )
        .await
        .unwrap();
    let (status, execution) = app.execute(node, None, body).await.unwrap();
    assert_eq!(status, 202, "{execution}");
    execution["id"].as_str().unwrap().parse().unwrap()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|event| event["kind"].as_str().unwrap())
        .collect()
}

/// The tool message the model received for `call_id`, across all requests.
fn tool_result_seen(chat: &ScriptedChat, call_id: &str) -> Option<String> {
    chat.requests().iter().rev().find_map(|request| {
        request["messages"].as_array()?.iter().find_map(|message| {
            (message["role"] == "tool" && message["tool_call_id"] == call_id)
                .then(|| message["content"].as_str().unwrap_or_default().to_string())
        })
    })
}

#[tokio::test]
async fn full_run_searches_asks_a_person_waits_for_approval_and_completes() {
    let app = TestApp::spawn().await.unwrap();
    let file_worker = app
        .spawn_worker(
            testkit::workspace_binary("worker-files").to_str().unwrap(),
            &[],
        )
        .unwrap();
    let file = app
        .upload(
            "handbook.txt",
            "text/plain",
            b"Refund policy. Customers may return goods within a refund window of 30 days after delivery.\n\nShipping takes 5 days."
                .to_vec(),
        )
        .await
        .unwrap();
    app.wait_for_file(file, &["ready"], RUN).await.unwrap();
    drop(file_worker);

    let chat = ScriptedChat::start(vec![
        ChatReply::tool("search_files", json!({ "query": "refund window" })),
        ChatReply::tool(
            "ask_human",
            json!({ "question": "Which region is the customer in?" }),
        ),
        ChatReply::tool(
            "write_output",
            json!({ "key": "refund_window", "value": "30 days (EU)" }),
        ),
        ChatReply::text("The refund window is 30 days."),
    ])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let id = start(&app, json!({ "model": "gpt-4o-mini" })).await;

    let waiting = app
        .wait_for_execution(id, &["awaiting_input"], RUN)
        .await
        .unwrap();
    assert_eq!(
        waiting["step"], 2,
        "search and question steps are committed"
    );
    let question = &waiting["pending_inputs"][0];
    assert_eq!(question["kind"], "question");
    assert_eq!(question["question"], "Which region is the customer in?");
    let search_result =
        tool_result_seen(&chat, "call_0_0").expect("the search result reached the model");
    assert!(search_result.contains("30 days"), "{search_result}");
    let search_result: Value = serde_json::from_str(&search_result).unwrap();
    assert_eq!(
        search_result["untrusted_data"], true,
        "file passages reach the model marked as untrusted: {search_result}"
    );
    assert!(
        search_result["hits"][0]["untrusted_text"]
            .as_str()
            .unwrap()
            .contains("refund window"),
        "{search_result}"
    );

    let input_id = question["id"].as_str().unwrap();
    let (status, answered) = app
        .post(
            &format!("/v1/executions/{id}/input"),
            json!({ "answer": "EU", "input_id": input_id }),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{answered}");
    let (status, duplicate) = app
        .post(
            &format!("/v1/executions/{id}/input"),
            json!({ "answer": "US", "input_id": input_id }),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{duplicate}");
    assert_eq!(duplicate["error"]["code"], "already_answered");

    wait_until(RUN, || async {
        let (_, execution) = app.get(&format!("/v1/executions/{id}")).await.unwrap();
        execution["pending_inputs"][0]["kind"] == "approval"
    })
    .await
    .unwrap();
    let (_, held) = app.get(&format!("/v1/executions/{id}")).await.unwrap();
    assert_eq!(held["status"], "awaiting_input");
    let approval = &held["pending_inputs"][0];
    assert_eq!(approval["tool"], "write_output");
    assert_eq!(
        tool_result_seen(&chat, "call_1_0").unwrap(),
        json!({ "answer": "EU" }).to_string()
    );
    let (_, node_before) = app
        .get(&format!("/v1/nodes/{}", held["node_id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        node_before["outputs"],
        json!({}),
        "nothing is written before approval"
    );
    let approval_id = approval["id"].as_str().unwrap();
    // The org's ordinary token may see the approval but not decide it.
    for decision in ["approve", "reject"] {
        let (status, refused) = app
            .post(
                &format!("/v1/executions/{id}/approvals/{approval_id}/{decision}"),
                json!({}),
            )
            .await
            .unwrap();
        assert_eq!(status, 403, "{refused}");
        assert_eq!(refused["error"]["code"], "forbidden");
    }
    let (_, still_held) = app.get(&format!("/v1/executions/{id}")).await.unwrap();
    assert_eq!(still_held["pending_inputs"][0]["id"], approval["id"]);
    let approver = app.approver_token("carol");
    let (status, approved) = app
        .post_as(
            &format!("/v1/executions/{id}/approvals/{approval_id}/approve"),
            json!({}),
            &approver,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{approved}");
    let (status, _) = app
        .post_as(
            &format!("/v1/executions/{id}/approvals/{approval_id}/reject"),
            json!({}),
            &approver,
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "a decided approval cannot be decided again");

    let done = app
        .wait_for_execution(id, &["completed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["step"], 4);
    assert_eq!(done["result"], "The refund window is 30 days.");
    assert_eq!(done["tokens_in"], 4 * CHAT_TOKENS_IN);
    assert_eq!(done["tokens_out"], 4 * CHAT_TOKENS_OUT);
    let expected_cost =
        (4.0 * CHAT_TOKENS_IN as f64 * 0.15 + 4.0 * CHAT_TOKENS_OUT as f64 * 0.60) / 1e6;
    assert!(
        (done["cost_usd"].as_f64().unwrap() - expected_cost).abs() < 1e-12,
        "{done}"
    );
    let (_, node) = app
        .get(&format!("/v1/nodes/{}", done["node_id"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(node["outputs"], json!({ "refund_window": "30 days (EU)" }));

    let events = app.trace(id).await.unwrap();
    assert_eq!(
        kinds(&events),
        [
            "queued",
            "claimed",
            "model_call",
            "tool_call",
            "tool_result",
            "model_call",
            "tool_call",
            "question",
            "awaiting_input",
            "human_input",
            "claimed",
            "tool_result",
            "model_call",
            "tool_call",
            "approval_requested",
            "awaiting_input",
            "approved",
            "claimed",
            "tool_result",
            "model_call",
            "completed",
        ]
    );
    for event in events.iter().filter(|event| event["kind"] == "model_call") {
        let data = &event["data"];
        assert_eq!(data["model"], "gpt-4o-mini");
        assert_eq!(data["tokens_in"], CHAT_TOKENS_IN);
        assert_eq!(data["tokens_out"], CHAT_TOKENS_OUT);
        assert!(
            data["latency_ms"].is_u64() && data["cost_usd"].as_f64().unwrap() > 0.0,
            "{data}"
        );
    }
    let steps: Vec<i64> = events
        .iter()
        .filter_map(|event| event["step"].as_i64())
        .collect();
    assert!(
        steps.windows(2).all(|pair| pair[0] <= pair[1]),
        "trace steps in order: {steps:?}"
    );

    let (status, late) = app
        .post(
            &format!("/v1/executions/{id}/input"),
            json!({ "answer": "late" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{late}");
    assert_eq!(chat.requests().len(), 4, "each step called the model once");
}

#[tokio::test]
async fn cancel_during_a_slow_model_call_interrupts_the_call() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![ChatReply::slow(
        Duration::from_secs(30),
        ChatReply::text("too late"),
    )])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let id = start(&app, json!({})).await;
    wait_until(RUN, || async { chat.requests_for_step(0) == 1 })
        .await
        .unwrap();
    let (status, response) = app
        .post(&format!("/v1/executions/{id}/cancel"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{response}");
    assert_eq!(response["control"], "cancel");
    // The model would answer after 30 s: the run ends long before, by the cancel's
    // notification (the worker does not poll; see tests/round_trips.rs).
    let cancelled = app
        .wait_for_execution(
            id,
            &["cancelled", "completed", "failed"],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(
        cancelled["tokens_in"], 0,
        "an interrupted call is not counted"
    );
    let events = app.trace(id).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last["kind"], "cancelled");
    assert_eq!(last["data"]["interrupted_model_call"], true);
}

#[tokio::test]
async fn pause_then_resume_continues_at_the_next_step() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::slow(
            Duration::from_millis(1500),
            ChatReply::tool("get_node_context", json!({})),
        ),
        ChatReply::text("finished"),
    ])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let id = start(&app, json!({})).await;
    wait_until(RUN, || async { chat.requests_for_step(0) == 1 })
        .await
        .unwrap();
    let (status, response) = app
        .post(&format!("/v1/executions/{id}/pause"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{response}");
    let paused = app.wait_for_execution(id, &["paused"], RUN).await.unwrap();
    assert_eq!(
        paused["step"], 1,
        "the step in flight finished and committed first"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(chat.requests_for_step(1), 0, "a paused run calls no model");
    let context = tool_result_seen(&chat, "call_0_0");
    assert!(
        context.is_none(),
        "the tool result is only sent with the next step"
    );

    let (status, resumed) = app
        .post(&format!("/v1/executions/{id}/resume"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202, "{resumed}");
    let done = app
        .wait_for_execution(id, &["completed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["step"], 2);
    assert_eq!(chat.requests_for_step(0), 1, "step 0 was not redone");
    assert_eq!(chat.requests_for_step(1), 1);
    let node_context = tool_result_seen(&chat, "call_0_0").unwrap();
    assert!(node_context.contains("ACME"), "{node_context}");
    let events = app.trace(id).await.unwrap();
    assert!(
        kinds(&events)
            .windows(2)
            .any(|pair| pair == ["paused", "resumed"]),
        "{:?}",
        kinds(&events)
    );
}

#[tokio::test]
async fn throttled_and_failing_model_calls_are_retried() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start_with_attempts(vec![vec![
        ChatReply::Status(429),
        ChatReply::Status(503),
        ChatReply::text("ok"),
    ]])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let id = start(&app, json!({})).await;
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(chat.requests_for_step(0), 3);
    let events = app.trace(id).await.unwrap();
    let model_call = events
        .iter()
        .find(|event| event["kind"] == "model_call")
        .unwrap();
    assert_eq!(model_call["data"]["attempts"], 3);
    assert_eq!(
        done["tokens_in"], CHAT_TOKENS_IN,
        "only the answered attempt is counted"
    );
}

#[tokio::test]
async fn malformed_arguments_and_unknown_tools_go_back_to_the_model() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::ToolCalls(vec![
            ("search_files".into(), "{\"query\": oops".into()),
            ("launch_rockets".into(), "{}".into()),
            ("get_node_context".into(), "{\"unexpected\": 1}".into()),
        ]),
        ChatReply::text("recovered"),
    ])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let id = start(&app, json!({})).await;
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"], "recovered");
    let malformed = tool_result_seen(&chat, "call_0_0").unwrap();
    assert!(
        malformed.contains("invalid arguments for search_files"),
        "{malformed}"
    );
    let unknown = tool_result_seen(&chat, "call_0_1").unwrap();
    assert!(unknown.contains("unknown tool"), "{unknown}");
    let extra = tool_result_seen(&chat, "call_0_2").unwrap();
    assert!(extra.contains("unexpected"), "{extra}");
    let reasons: Vec<String> = app
        .trace(id)
        .await
        .unwrap()
        .iter()
        .filter(|event| event["kind"] == "tool_result")
        .map(|event| {
            event["data"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        reasons,
        ["invalid_arguments", "unknown_tool", "invalid_arguments"]
    );
}

#[tokio::test]
async fn denied_tools_go_back_to_the_model_as_denials() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("write_output", json!({ "key": "k", "value": 1 })),
        ChatReply::text("could not write"),
    ])
    .await
    .unwrap();
    let _worker = spawn_agent(
        &app,
        &chat,
        &[("GLASSBOX_AGENT_WORKER__TOOL_POLICY__WRITE_OUTPUT", "deny")],
    );
    let id = start(&app, json!({})).await;
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    let denial = tool_result_seen(&chat, "call_0_0").unwrap();
    assert!(denial.contains("denied by policy"), "{denial}");
    let offered: Vec<String> = chat.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !offered.contains(&"write_output".to_string()),
        "{offered:?}"
    );
}

#[tokio::test]
async fn exceeded_budgets_fail_the_run_with_their_code() {
    let app = TestApp::spawn().await.unwrap();
    // The model never stops calling tools.
    let chat = ScriptedChat::start(vec![ChatReply::tool("get_node_context", json!({}))])
        .await
        .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let by_steps = start(&app, json!({ "budget": { "max_steps": 3 } })).await;
    let by_tokens = start(&app, json!({ "budget": { "max_tokens": 150 } })).await;
    let by_cost = start(
        &app,
        json!({ "model": "gpt-4o", "budget": { "max_cost_usd": 0.0005 } }),
    )
    .await;

    let failed = app
        .wait_for_execution(by_steps, &["failed", "completed"], RUN)
        .await
        .unwrap();
    assert_eq!(failed["error_code"], "budget_steps_exceeded", "{failed}");
    assert_eq!(failed["error_class"], "permanent");
    assert_eq!(failed["step"], 3);
    let failed = app
        .wait_for_execution(by_tokens, &["failed", "completed"], RUN)
        .await
        .unwrap();
    assert_eq!(failed["error_code"], "budget_tokens_exceeded", "{failed}");
    assert_eq!(
        failed["step"], 2,
        "120 tokens after one step, 240 after two"
    );
    let failed = app
        .wait_for_execution(by_cost, &["failed", "completed"], RUN)
        .await
        .unwrap();
    assert_eq!(failed["error_code"], "budget_cost_exceeded", "{failed}");
    let events = app.trace(by_steps).await.unwrap();
    assert_eq!(events.last().unwrap()["kind"], "failed");
    assert_eq!(
        events.last().unwrap()["data"]["error_code"],
        "budget_steps_exceeded"
    );
}

#[tokio::test]
async fn answers_to_several_questions_are_all_kept_and_a_pause_waits_for_them() {
    let app = TestApp::spawn().await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::ToolCalls(vec![
            (
                "ask_human".into(),
                json!({ "question": "first?" }).to_string(),
            ),
            (
                "ask_human".into(),
                json!({ "question": "second?" }).to_string(),
            ),
        ]),
        ChatReply::text("thanks"),
    ])
    .await
    .unwrap();
    let _worker = spawn_agent(&app, &chat, &[]);
    let id = start(&app, json!({})).await;
    let waiting = app
        .wait_for_execution(id, &["awaiting_input"], RUN)
        .await
        .unwrap();
    let pending = waiting["pending_inputs"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 2, "{waiting}");
    let (status, ambiguous) = app
        .post(
            &format!("/v1/executions/{id}/input"),
            json!({ "answer": "x" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{ambiguous}");

    // A pause asked while waiting is honoured once the answers let the run go on.
    let (status, _) = app
        .post(&format!("/v1/executions/{id}/pause"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202);
    for (input, answer) in pending.iter().zip(["one", "two"]) {
        let (status, after) = app
            .post(
                &format!("/v1/executions/{id}/input"),
                json!({ "answer": answer, "input_id": input["id"] }),
            )
            .await
            .unwrap();
        assert_eq!(status, 202, "{after}");
        if answer == "one" {
            assert_eq!(
                after["status"], "awaiting_input",
                "one question is still open"
            );
        }
    }
    let paused = app.wait_for_execution(id, &["paused"], RUN).await.unwrap();
    assert_eq!(paused["step"], 1);
    assert_eq!(chat.requests_for_step(1), 0);
    let (status, _) = app
        .post(&format!("/v1/executions/{id}/resume"), json!({}))
        .await
        .unwrap();
    assert_eq!(status, 202);
    app.wait_for_execution(id, &["completed"], RUN)
        .await
        .unwrap();
    assert_eq!(
        tool_result_seen(&chat, "call_0_0").unwrap(),
        json!({ "answer": "one" }).to_string()
    );
    assert_eq!(
        tool_result_seen(&chat, "call_0_1").unwrap(),
        json!({ "answer": "two" }).to_string()
    );
}
