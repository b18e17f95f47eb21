//! MCP tools end to end: testkit's MCP server over streamable HTTP and over stdio, the
//! real worker-agent binary, Postgres, moto and a scripted model. The server logs every
//! call it carries out to a file, so calls are counted across worker crashes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use testkit::mcp::{McpTestServer, calls};
use testkit::scripted::{ChatReply, ScriptedChat};
use testkit::{TestApp, WorkerProcess, wait_until};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");
const RUN: Duration = Duration::from_secs(60);
const PREFIX: &str = "GLASSBOX_AGENT_WORKER__MCP_SERVERS__DOCS__";

/// A fresh calls log in the system's temp folder.
fn calls_log() -> PathBuf {
    std::env::temp_dir().join(format!("glassbox-mcp-calls-{}.log", Uuid::new_v4()))
}

/// Worker settings for a server named `docs`, usable by the app's org: `lookup` is
/// declared idempotent, `purge` is denied, `send_message` gets `send_policy` (or its
/// default, approval, when None).
fn docs_server(
    app: &TestApp,
    transport: &Transport,
    send_policy: Option<&str>,
) -> Vec<(String, String)> {
    let mut settings = vec![
        ("ORGS".to_string(), format!("[{}]", app.org_id)),
        ("IDEMPOTENT_TOOLS".into(), "[lookup]".into()),
        ("TOOL_POLICY__PURGE".into(), "deny".into()),
    ];
    if let Some(policy) = send_policy {
        settings.push(("TOOL_POLICY__SEND_MESSAGE".into(), policy.into()));
    }
    match transport {
        Transport::Http(url) => {
            settings.push(("TRANSPORT".into(), "http".into()));
            settings.push(("URL".into(), url.clone()));
        }
        Transport::Stdio(log) => {
            settings.push(("TRANSPORT".into(), "stdio".into()));
            settings.push((
                "COMMAND".into(),
                testkit::workspace_binary("mcp-test-server")
                    .display()
                    .to_string(),
            ));
            settings.push(("ARGS".into(), format!("[\"{}\"]", log.display())));
        }
    }
    settings
        .into_iter()
        .map(|(name, value)| (format!("{PREFIX}{name}"), value))
        .collect()
}

enum Transport {
    Http(String),
    Stdio(PathBuf),
}

fn spawn_agent(
    app: &TestApp,
    chat: &ScriptedChat,
    server: &[(String, String)],
    extra: &[(&str, &str)],
) -> WorkerProcess {
    let mut overrides: Vec<(&str, &str)> = server
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    overrides.extend_from_slice(extra);
    app.spawn_agent(WORKER, chat, &overrides).unwrap()
}

async fn start(app: &TestApp) -> Uuid {
    let node = app
        .create_node("Messages", "Tell the team.", json!({}))
        .await
        .unwrap();
    let (status, execution) = app.execute(node, None, json!({})).await.unwrap();
    assert_eq!(status, 202, "{execution}");
    execution["id"].as_str().unwrap().parse().unwrap()
}

/// The names of the tools offered to the model in its first request.
fn offered_tools(chat: &ScriptedChat) -> Vec<String> {
    chat.requests()[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["function"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// The tool message the model received for `call_id`.
fn tool_result_seen(chat: &ScriptedChat, call_id: &str) -> Option<String> {
    chat.requests().iter().rev().find_map(|request| {
        request["messages"].as_array()?.iter().find_map(|message| {
            (message["role"] == "tool" && message["tool_call_id"] == call_id)
                .then(|| message["content"].as_str().unwrap_or_default().to_string())
        })
    })
}

fn event<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|event| event["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
}

async fn ledger(app: &TestApp, id: Uuid) -> Vec<(String, String, i32)> {
    sqlx::query_as("SELECT tool, status, runs FROM tool_calls WHERE execution_id = $1 ORDER BY step, call_index")
        .bind(id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_agent_lists_and_calls_mcp_tools_over_streamable_http() {
    let app = TestApp::spawn().await.unwrap();
    let server = McpTestServer::start_http(calls_log()).await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("docs__lookup", json!({ "query": "refund window" })),
        ChatReply::tool(
            "docs__send_message",
            json!({ "to": "team", "text": "30 days" }),
        ),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let settings = docs_server(&app, &Transport::Http(server.url.clone()), Some("allow"));
    let _worker = spawn_agent(&app, &chat, &settings, &[]);
    let id = start(&app).await;
    let done = app
        .wait_for_execution(id, &["completed", "failed", "cancelled"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");

    let offered = offered_tools(&chat);
    assert!(offered.contains(&"docs__lookup".to_string()), "{offered:?}");
    assert!(
        offered.contains(&"docs__send_message".to_string()),
        "{offered:?}"
    );
    assert!(
        !offered.contains(&"docs__purge".to_string()),
        "a denied tool is not offered: {offered:?}"
    );
    assert!(
        offered.contains(&"get_node_context".to_string()),
        "{offered:?}"
    );
    assert_eq!(server.calls(), ["lookup", "send_message"]);
    assert!(
        tool_result_seen(&chat, "call_0_0")
            .is_some_and(|seen| seen.contains("found: refund window")),
        "{:?}",
        tool_result_seen(&chat, "call_0_0")
    );
    assert!(tool_result_seen(&chat, "call_1_0").is_some_and(|seen| seen.contains("sent to team")));
    let events = app.trace(id).await.unwrap();
    let call = event(&events, "tool_call");
    assert_eq!(call["data"]["tool"], "docs__lookup");
    let result = event(&events, "tool_result");
    assert_eq!(result["data"]["ok"], true, "{result}");
    // The read kept no ledger row; the effect did, once.
    assert_eq!(
        ledger(&app, id).await,
        [("docs__send_message".to_string(), "succeeded".to_string(), 1)]
    );
}

#[tokio::test]
async fn an_agent_calls_an_mcp_tool_over_stdio_and_a_denied_tool_is_refused() {
    let app = TestApp::spawn().await.unwrap();
    let log = calls_log();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("docs__purge", json!({})),
        ChatReply::tool("docs__lookup", json!({ "query": "owner" })),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let settings = docs_server(&app, &Transport::Stdio(log.clone()), None);
    let _worker = spawn_agent(&app, &chat, &settings, &[]);
    let id = start(&app).await;
    let done = app
        .wait_for_execution(id, &["completed", "failed", "cancelled"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(calls(&log), ["lookup"], "purge never reached the server");
    let events = app.trace(id).await.unwrap();
    let refused = event(&events, "tool_result");
    assert_eq!(refused["data"]["tool"], "docs__purge");
    assert_eq!(refused["data"]["ok"], false);
    assert_eq!(refused["data"]["reason"], "denied_by_policy");
    assert!(tool_result_seen(&chat, "call_1_0").is_some_and(|seen| seen.contains("found: owner")));
}

#[tokio::test]
async fn an_mcp_tool_with_an_effect_waits_for_approval() {
    let app = TestApp::spawn().await.unwrap();
    let server = McpTestServer::start_http(calls_log()).await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("docs__send_message", json!({ "to": "ceo", "text": "hi" })),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    // send_message keeps its default policy: not idempotent, so approval.
    let settings = docs_server(&app, &Transport::Http(server.url.clone()), None);
    let _worker = spawn_agent(&app, &chat, &settings, &[]);
    let id = start(&app).await;
    let held = app
        .wait_for_execution(id, &["awaiting_input", "completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(held["status"], "awaiting_input", "{held}");
    let approval = &held["pending_inputs"][0];
    assert_eq!(approval["kind"], "approval");
    assert_eq!(approval["tool"], "docs__send_message");
    assert!(server.calls().is_empty(), "nothing is sent before approval");

    let approval_id = approval["id"].as_str().unwrap();
    let (status, approved) = app
        .post_as(
            &format!("/v1/executions/{id}/approvals/{approval_id}/approve"),
            json!({}),
            &app.approver_token("carol"),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{approved}");
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(server.calls(), ["send_message"]);
    assert!(tool_result_seen(&chat, "call_0_0").is_some_and(|seen| seen.contains("sent to ceo")));
}

/// Runs send_message on a worker that stops at `failpoint`, SIGKILLs it there, and
/// finishes the run on a fresh worker. Returns the run and the calls log.
async fn crash_at(failpoint: &str) -> (TestApp, ScriptedChat, Uuid, PathBuf) {
    let app = TestApp::spawn().await.unwrap();
    let log = calls_log();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool(
            "docs__send_message",
            json!({ "to": "ops", "text": "deploy" }),
        ),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let settings = docs_server(&app, &Transport::Stdio(log.clone()), Some("allow"));
    let mut doomed = spawn_agent(
        &app,
        &chat,
        &settings,
        &[("GLASSBOX_AGENT_WORKER__FAILPOINT", failpoint)],
    );
    let id = start(&app).await;
    wait_until(RUN, || async { calls(&log).len() == 1 })
        .await
        .unwrap();
    if failpoint == "after_tool_calls" {
        // The outcome is in the ledger before the worker stops there.
        wait_until(RUN, || async {
            ledger(&app, id)
                .await
                .first()
                .is_some_and(|row| row.1 == "succeeded")
        })
        .await
        .unwrap();
    } else {
        // The failpoint holds the worker right after the call: give it time to get there.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    doomed.kill().await.unwrap();
    let _survivor = spawn_agent(&app, &chat, &settings, &[]);
    let done = app
        .wait_for_execution(id, &["completed", "failed"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    (app, chat, id, log)
}

fn assert_called_once(log: &Path) {
    assert_eq!(calls(log), ["send_message"], "the message was sent once");
}

#[tokio::test]
async fn a_crash_after_an_mcp_call_before_the_commit_does_not_call_it_twice() {
    let (app, chat, id, log) = crash_at("after_tool_calls").await;
    assert_called_once(&log);
    assert_eq!(
        chat.requests_for_step(0),
        1,
        "the step was redone with the recorded answer"
    );
    assert_eq!(
        ledger(&app, id).await,
        [("docs__send_message".to_string(), "succeeded".to_string(), 1)]
    );
    assert!(tool_result_seen(&chat, "call_0_0").is_some_and(|seen| seen.contains("sent to ops")));
}

#[tokio::test]
async fn an_mcp_call_whose_outcome_is_unknown_after_a_crash_is_not_run_again() {
    let (_app, chat, _id, log) = crash_at("after_tool_effect").await;
    assert_called_once(&log);
    let seen = tool_result_seen(&chat, "call_0_0").unwrap();
    assert!(seen.contains("unknown"), "the model is told: {seen}");
}
