//! fleetctl's commands against a stub of the ops API (just enough of docs/ops-api.md):
//! what they send, what they print and how they exit. The real API is covered by an
//! end-to-end test elsewhere; this one pins the CLI's side of the contract.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use fleetctl::{ApiError, Cli, Confirmation, Environment, FleetError, Outcome};
use serde_json::{Value, json};

const OPS_TOKEN: &str = "ops-token";
const FIRST_MESSAGE: &str = "5f0c2d7e-1111-4222-8333-444455556666";
const SECOND_MESSAGE: &str = "9a9a9a9a-1111-4222-8333-444455556666";
const REFUSED_FILE: &str = "0193c1a2-0000-7000-8000-000000000409";
const QUEUED_FILE: &str = "0193c1a2-0000-7000-8000-000000000001";
const EXECUTION: &str = "0193c1a2-0000-7000-8000-0000000000e1";

/// One request the stub saw.
#[derive(Debug, Clone)]
struct Seen {
    method: &'static str,
    path: String,
    query: HashMap<String, String>,
    body: Option<Value>,
}

#[derive(Default)]
struct StubState {
    seen: Vec<Seen>,
    polls_per_task: HashMap<String, u64>,
}

type Shared = Arc<Mutex<StubState>>;

struct Stub {
    url: String,
    state: Shared,
}

impl Stub {
    async fn start() -> Self {
        let state = Shared::default();
        let app = Router::new()
            .route("/v1/ops/queues", get(queues))
            .route("/v1/ops/dlq/{queue}", get(dlq_peek))
            .route(
                "/v1/ops/dlq/{queue}/messages/{message_id}",
                get(dlq_message),
            )
            .route("/v1/ops/dlq/{queue}/redrive", post(redrive))
            .route("/v1/ops/dlq/{queue}/discard", post(discard))
            .route("/v1/ops/tasks/{task_id}", get(task))
            .route("/v1/ops/audit", get(audit))
            .route("/v1/executions/{id}/trace", get(trace))
            .route("/v1/files/{id}/reprocess", post(reprocess))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{address}"),
            state,
        }
    }

    fn seen(&self, method: &str, path: &str) -> Vec<Seen> {
        let state = self.state.lock().expect("stub state");
        state
            .seen
            .iter()
            .filter(|seen| seen.method == method && seen.path == path)
            .cloned()
            .collect()
    }

    fn polls(&self, task_id: &str) -> u64 {
        let state = self.state.lock().expect("stub state");
        state.polls_per_task.get(task_id).copied().unwrap_or(0)
    }

    /// Runs `fleetctl --api-url <stub> --token <token> <arguments>` in-process.
    async fn run_as(
        &self,
        token: &str,
        environment: &Environment,
        arguments: &[&str],
    ) -> (Result<Outcome, FleetError>, String) {
        let mut full = vec!["fleetctl", "--api-url", &self.url, "--token", token];
        full.extend_from_slice(arguments);
        let cli = Cli::try_parse_from(full).expect("the command line parses");
        let mut out = Vec::new();
        let result = fleetctl::run(cli, environment, &mut out).await;
        (result, String::from_utf8(out).expect("utf-8 output"))
    }

    async fn run(&self, arguments: &[&str]) -> (Result<Outcome, FleetError>, String) {
        self.run_as(OPS_TOKEN, &quiet(), arguments).await
    }
}

fn quiet() -> Environment {
    Environment::non_interactive(Duration::from_millis(5))
}

fn record(
    state: &Shared,
    method: &'static str,
    path: String,
    query: HashMap<String, String>,
    body: Option<Value>,
) {
    let mut state = state.lock().expect("stub state");
    state.seen.push(Seen {
        method,
        path,
        query,
        body,
    });
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The 403 `forbidden` ops routes answer to a token without the ops role.
fn forbidden_unless_ops(headers: &HeaderMap) -> Option<Response> {
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    if authorization == format!("Bearer {OPS_TOKEN}") {
        return None;
    }
    Some(api_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this route needs a token with the ops role",
    ))
}

fn queues_body() -> Value {
    json!({"queues": [
        {"queue": "file-jobs", "kind": "file.process", "url": "http://sqs/file-jobs",
         "visible": 3, "in_flight": 1, "delayed": 0, "oldest_age_secs": 185.2, "max_receive_count": 6,
         "dlq": {"name": "file-jobs-dlq", "url": "http://sqs/file-jobs-dlq", "visible": 2, "in_flight": 0}},
        {"queue": "agent-jobs", "kind": "agent.step", "url": "http://sqs/agent-jobs",
         "visible": 0, "in_flight": 0, "delayed": 0, "oldest_age_secs": null, "max_receive_count": 6,
         "dlq": {"name": "agent-jobs-dlq", "url": "http://sqs/agent-jobs-dlq", "visible": 1, "in_flight": 0}}
    ]})
}

fn message(message_id: &str, kind: &str, error_code: &str) -> Value {
    json!({"message_id": message_id, "kind": kind, "job_id": "0193c1a2-7b4e-7c3d-9f10-2a6b8c9d0e1f",
        "org_id": "0193aaaa-0000-7000-8000-000000000001", "receive_count": 6,
        "first_seen": "2026-11-23T10:00:00Z", "last_seen": "2026-11-23T10:05:00.123Z",
        "status": "dead_lettered", "error_class": "transient", "error_code": error_code,
        "last_error": "s3 said 503", "attempts": 6, "poison": false,
        "body": "{\"job_id\":\"0193c1a2-7b4e-7c3d-9f10-2a6b8c9d0e1f\"}"})
}

fn messages() -> Vec<Value> {
    vec![
        message(FIRST_MESSAGE, "file.process", "s3_unavailable"),
        message(SECOND_MESSAGE, "file.process", "pdf_encrypted"),
    ]
}

async fn queues(State(state): State<Shared>, headers: HeaderMap) -> Response {
    record(&state, "GET", "/v1/ops/queues".into(), HashMap::new(), None);
    if let Some(forbidden) = forbidden_unless_ops(&headers) {
        return forbidden;
    }
    Json(queues_body()).into_response()
}

async fn dlq_peek(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    record(
        &state,
        "GET",
        format!("/v1/ops/dlq/{queue}"),
        query.clone(),
        None,
    );
    if let Some(forbidden) = forbidden_unless_ops(&headers) {
        return forbidden;
    }
    let limit: usize = query
        .get("limit")
        .and_then(|limit| limit.parse().ok())
        .unwrap_or(50);
    let all = messages();
    let truncated = all.len() > limit;
    let shown: Vec<Value> = all.into_iter().take(limit).collect();
    Json(json!({"queue": queue, "truncated": truncated, "messages": shown})).into_response()
}

async fn dlq_message(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path((queue, message_id)): Path<(String, String)>,
) -> Response {
    record(
        &state,
        "GET",
        format!("/v1/ops/dlq/{queue}/messages/{message_id}"),
        HashMap::new(),
        None,
    );
    if let Some(forbidden) = forbidden_unless_ops(&headers) {
        return forbidden;
    }
    match messages()
        .into_iter()
        .find(|message| message["message_id"] == message_id.as_str())
    {
        Some(message) => Json(message).into_response(),
        None => api_error(StatusCode::NOT_FOUND, "not_found", "message not found"),
    }
}

/// file-jobs redrives succeed (moving one message per poll); agent-jobs redrives fail.
fn task_state(task_id: &str, polls: u64) -> Value {
    let base = json!({"id": task_id, "action": "redrive", "method": "receive_send_delete",
        "requested_by": "alice", "selector": {"all": true}, "error": null,
        "created_at": "2026-11-23T10:00:00Z", "finished_at": null});
    let mut task = base;
    if task_id == "task-file-jobs" {
        let moved = polls.min(3);
        task["queue"] = json!("file-jobs");
        task["total"] = json!(3);
        task["moved"] = json!(moved);
        task["failed"] = json!(0);
        task["status"] = json!(if moved == 3 { "succeeded" } else { "running" });
    } else {
        task["queue"] = json!("agent-jobs");
        task["total"] = if polls == 0 { Value::Null } else { json!(2) };
        task["moved"] = json!(polls.min(1));
        task["failed"] = json!(if polls >= 1 { 1 } else { 0 });
        task["status"] = json!(if polls >= 1 { "failed" } else { "running" });
        if polls >= 1 {
            task["error"] = json!("send to agent-jobs failed");
        }
    }
    task
}

async fn redrive(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    record(
        &state,
        "POST",
        format!("/v1/ops/dlq/{queue}/redrive"),
        HashMap::new(),
        Some(body),
    );
    if let Some(forbidden) = forbidden_unless_ops(&headers) {
        return forbidden;
    }
    let task_id = format!("task-{queue}");
    (
        StatusCode::ACCEPTED,
        Json(json!({"task": task_state(&task_id, 0)})),
    )
        .into_response()
}

async fn task(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(task_id): Path<String>,
) -> Response {
    record(
        &state,
        "GET",
        format!("/v1/ops/tasks/{task_id}"),
        HashMap::new(),
        None,
    );
    if let Some(forbidden) = forbidden_unless_ops(&headers) {
        return forbidden;
    }
    let polls = {
        let mut stub_state = state.lock().expect("stub state");
        let polls = stub_state
            .polls_per_task
            .entry(task_id.clone())
            .or_insert(0);
        *polls += 1;
        *polls
    };
    Json(json!({"task": task_state(&task_id, polls)})).into_response()
}

async fn discard(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(queue): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    record(
        &state,
        "POST",
        format!("/v1/ops/dlq/{queue}/discard"),
        HashMap::new(),
        Some(body.clone()),
    );
    if let Some(forbidden) = forbidden_unless_ops(&headers) {
        return forbidden;
    }
    if body["confirm"] != json!(true) {
        return api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirmation_required",
            "discarding needs \"confirm\": true",
        );
    }
    let count = body["message_ids"].as_array().map(Vec::len).unwrap_or(2);
    Json(json!({"discarded": count})).into_response()
}

async fn audit(State(state): State<Shared>) -> Response {
    record(&state, "GET", "/v1/ops/audit".into(), HashMap::new(), None);
    api_error(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this route needs a token with the ops role",
    )
}

async fn trace(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    record(
        &state,
        "GET",
        format!("/v1/executions/{id}/trace"),
        query.clone(),
        None,
    );
    let event = |event_id: i64, kind: &str| {
        json!({"id": event_id, "step": event_id - 1, "kind": kind,
            "data": {"note": format!("event {event_id}")}, "created_at": "2026-11-23T10:00:00Z"})
    };
    match query.get("after").map(String::as_str) {
        None | Some("0") => Json(
            json!({"events": [event(1, "model_call"), event(2, "tool_call")], "next_cursor": 2}),
        )
        .into_response(),
        Some("2") => {
            Json(json!({"events": [event(3, "finished")], "next_cursor": null})).into_response()
        }
        Some(other) => api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            &format!("bad after {other}"),
        ),
    }
}

async fn reprocess(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    record(
        &state,
        "POST",
        format!("/v1/files/{id}/reprocess"),
        HashMap::new(),
        None,
    );
    if id == REFUSED_FILE {
        return api_error(
            StatusCode::CONFLICT,
            "not_reprocessable",
            "a file in status processing cannot be reprocessed now",
        );
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "name": "report.pdf", "status": "queued"})),
    )
        .into_response()
}

#[tokio::test]
async fn queues_prints_a_table_and_sends_the_token() {
    let stub = Stub::start().await;
    let (result, out) = stub.run(&["queues"]).await;
    assert_eq!(result.expect("queues runs"), Outcome::Success);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("QUEUE"), "{out}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["file-jobs", "file.process", "3", "1", "0", "3m", "5s", "2"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["agent-jobs", "agent.step", "0", "0", "0", "-", "1"]
    );
}

#[tokio::test]
async fn json_prints_the_answer_as_is() {
    let stub = Stub::start().await;
    let (result, out) = stub.run(&["queues", "--json"]).await;
    assert_eq!(result.expect("queues runs"), Outcome::Success);
    let printed: Value = serde_json::from_str(&out).expect("stdout is JSON");
    assert_eq!(printed, queues_body());
}

#[tokio::test]
async fn forbidden_answer_becomes_an_api_error_with_exit_1() {
    let stub = Stub::start().await;
    let (result, out) = stub.run_as("org-token", &quiet(), &["queues"]).await;
    let error = result.expect_err("a token without the ops role is refused");
    let FleetError::Api(ApiError { status, code, .. }) = &error else {
        panic!("not an API error: {error:?}");
    };
    assert_eq!((*status, code.as_str()), (403, "forbidden"));
    assert_eq!(error.exit_code(), 1);
    assert!(
        error.report().starts_with(
            "fleetctl: forbidden: this route needs a token with the ops role (HTTP 403)"
        ),
        "{}",
        error.report()
    );
    assert!(out.is_empty(), "nothing on stdout: {out}");

    let (audit_result, _) = stub.run(&["audit"]).await;
    assert!(matches!(
        audit_result,
        Err(FleetError::Api(ApiError { status: 403, .. }))
    ));
}

#[tokio::test]
async fn redrive_follows_the_task_until_it_succeeds() {
    let stub = Stub::start().await;
    let (result, out) = stub
        .run(&["dlq", "redrive", "file-jobs", "--all", "--rate", "5"])
        .await;
    assert_eq!(result.expect("redrive runs"), Outcome::Success);
    assert_eq!(
        out.trim_end(),
        "moved 3 of 3 messages from file-jobs-dlq to file-jobs (receive_send_delete)"
    );
    let redrives = stub.seen("POST", "/v1/ops/dlq/file-jobs/redrive");
    assert_eq!(redrives.len(), 1);
    assert_eq!(
        redrives[0].body,
        Some(json!({"all": true, "rate_per_sec": 5}))
    );
    // moved advances by one per poll and reaches 3 of 3 on the third.
    assert_eq!(stub.polls("task-file-jobs"), 3);
}

#[tokio::test]
async fn redrive_with_json_prints_the_final_task() {
    let stub = Stub::start().await;
    let (result, out) = stub
        .run(&[
            "dlq",
            "redrive",
            "file-jobs-dlq",
            "--kind",
            "file.process",
            "--json",
        ])
        .await;
    assert_eq!(result.expect("redrive runs"), Outcome::Success);
    let task: Value = serde_json::from_str(&out).expect("stdout is the task as JSON");
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["moved"], 3);
    let redrives = stub.seen("POST", "/v1/ops/dlq/file-jobs/redrive");
    assert_eq!(
        redrives[0].body,
        Some(json!({"filter": {"kind": "file.process"}}))
    );
}

#[tokio::test]
async fn failed_redrive_exits_non_zero() {
    let stub = Stub::start().await;
    let (result, out) = stub.run(&["dlq", "redrive", "agent-jobs", "--all"]).await;
    assert_eq!(result.expect("redrive runs"), Outcome::Failure);
    assert_eq!(Outcome::Failure.exit_code(), 1);
    assert!(
        out.contains("moved 1 of 2 messages from agent-jobs-dlq to agent-jobs (receive_send_delete), 1 failed"),
        "{out}"
    );
    assert!(
        out.contains("redrive failed: send to agent-jobs failed"),
        "{out}"
    );
}

#[tokio::test]
async fn no_wait_prints_the_task_without_polling() {
    let stub = Stub::start().await;
    let (result, out) = stub
        .run(&["dlq", "redrive", "file-jobs", "--all", "--no-wait"])
        .await;
    assert_eq!(result.expect("redrive runs"), Outcome::Success);
    assert!(out.contains("status        running"), "{out}");
    assert!(
        out.contains("fleetctl tasks show task-file-jobs --wait"),
        "{out}"
    );
    assert_eq!(stub.polls("task-file-jobs"), 0);
}

#[tokio::test]
async fn short_message_ids_resolve_against_a_peek() {
    let stub = Stub::start().await;
    let (result, _) = stub
        .run(&[
            "dlq",
            "redrive",
            "file-jobs",
            "--id",
            "5f0c",
            SECOND_MESSAGE,
        ])
        .await;
    assert_eq!(result.expect("redrive runs"), Outcome::Success);
    let redrives = stub.seen("POST", "/v1/ops/dlq/file-jobs/redrive");
    assert_eq!(
        redrives[0].body,
        Some(json!({"message_ids": [FIRST_MESSAGE, SECOND_MESSAGE]}))
    );

    let (unknown, _) = stub.run(&["dlq", "show", "file-jobs", "ffff"]).await;
    assert!(matches!(unknown, Err(FleetError::Lookup(_))), "{unknown:?}");

    let (shown, out) = stub.run(&["dlq", "show", "file-jobs", "9a9a"]).await;
    assert_eq!(shown.expect("show runs"), Outcome::Success);
    assert!(
        out.contains(&format!("message_id     {SECOND_MESSAGE}")),
        "{out}"
    );
    assert!(out.contains("error_code     pdf_encrypted"), "{out}");
    assert!(out.contains("last_error     s3 said 503"), "{out}");
}

#[tokio::test]
async fn dlq_list_shows_short_ids_and_the_limit_footer() {
    let stub = Stub::start().await;
    let (result, out) = stub
        .run(&["dlq", "list", "file-jobs", "--limit", "1"])
        .await;
    assert_eq!(result.expect("list runs"), Outcome::Success);
    assert!(out.contains("5f0c2d7e  file.process"), "{out}");
    assert!(!out.contains(SECOND_MESSAGE), "{out}");
    assert!(out.contains("raise --limit"), "{out}");
    let peeks = stub.seen("GET", "/v1/ops/dlq/file-jobs");
    assert_eq!(peeks[0].query.get("limit").map(String::as_str), Some("1"));
}

#[tokio::test]
async fn discard_refuses_without_a_terminal_or_yes() {
    let stub = Stub::start().await;
    let (result, _) = stub.run(&["dlq", "discard", "file-jobs", "--all"]).await;
    let error = result.expect_err("no terminal, no --yes");
    assert!(matches!(error, FleetError::Refused(_)), "{error:?}");
    assert!(error.to_string().contains("--yes"), "{error}");
    assert_eq!(error.exit_code(), 2);
    assert!(
        stub.seen("POST", "/v1/ops/dlq/file-jobs/discard")
            .is_empty()
    );
}

#[tokio::test]
async fn discard_sends_confirm_only_after_confirmation() {
    let stub = Stub::start().await;
    let mut declining = quiet();
    declining.confirmation = Confirmation::Answer(false);
    let (result, out) = stub
        .run_as(
            OPS_TOKEN,
            &declining,
            &["dlq", "discard", "file-jobs", "--all"],
        )
        .await;
    assert_eq!(result.expect("discard runs"), Outcome::Failure);
    assert!(out.contains("aborted"), "{out}");
    assert!(
        stub.seen("POST", "/v1/ops/dlq/file-jobs/discard")
            .is_empty()
    );

    let mut accepting = quiet();
    accepting.confirmation = Confirmation::Answer(true);
    let (result, out) = stub
        .run_as(
            OPS_TOKEN,
            &accepting,
            &[
                "dlq",
                "discard",
                "file-jobs",
                "--error-code",
                "s3_unavailable",
            ],
        )
        .await;
    assert_eq!(result.expect("discard runs"), Outcome::Success);
    assert_eq!(out.trim_end(), "discarded 2 messages from file-jobs-dlq");
    let discards = stub.seen("POST", "/v1/ops/dlq/file-jobs/discard");
    assert_eq!(
        discards[0].body,
        Some(json!({"filter": {"error_code": "s3_unavailable"}, "confirm": true}))
    );

    let (result, out) = stub
        .run(&[
            "dlq",
            "discard",
            "file-jobs",
            "--id",
            FIRST_MESSAGE,
            "--yes",
            "--json",
        ])
        .await;
    assert_eq!(result.expect("discard runs"), Outcome::Success);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("JSON"),
        json!({"discarded": 1})
    );
}

#[tokio::test]
async fn discard_question_counts_what_would_go() {
    let stub = Stub::start().await;
    let client = fleetctl::Client::new(&stub.url, OPS_TOKEN).expect("client");
    let selector = |arguments: &[&str]| {
        let mut full = vec!["fleetctl", "--token", "t", "dlq", "discard", "file-jobs"];
        full.extend_from_slice(arguments);
        match Cli::try_parse_from(full).expect("parses").command {
            fleetctl::cli::Command::Dlq(fleetctl::cli::DlqCommand::Discard {
                selector, ..
            }) => selector,
            other => panic!("not a discard: {other:?}"),
        }
    };
    let question = |arguments: &'static [&'static str], ids: Vec<String>| {
        let client = client.clone();
        let selector = selector(arguments);
        async move {
            fleetctl::commands::discard_question(&client, "file-jobs", &selector, &ids)
                .await
                .expect("question")
        }
    };
    assert_eq!(
        question(&["--all"], vec![]).await,
        "Discard all 2 messages from file-jobs-dlq? [y/N]"
    );
    assert_eq!(
        question(&["--error-code", "s3_unavailable"], vec![]).await,
        "Discard 1 message from file-jobs-dlq? [y/N]"
    );
    assert_eq!(
        question(&["--kind", "agent.step"], vec![]).await,
        "Discard 0 messages from file-jobs-dlq? [y/N]"
    );
    assert_eq!(
        question(
            &["--id", "a", "b"],
            vec![FIRST_MESSAGE.to_owned(), SECOND_MESSAGE.to_owned()]
        )
        .await,
        "Discard 2 messages from file-jobs-dlq? [y/N]"
    );
}

#[tokio::test]
async fn trace_follows_every_page() {
    let stub = Stub::start().await;
    let (result, out) = stub.run(&["executions", "trace", EXECUTION]).await;
    assert_eq!(result.expect("trace runs"), Outcome::Success);
    let kinds: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(2))
        .collect();
    assert_eq!(kinds, ["model_call", "tool_call", "finished"], "{out}");
    assert!(out.contains(r#"{"note":"event 3"}"#), "{out}");
    let pages = stub.seen("GET", &format!("/v1/executions/{EXECUTION}/trace"));
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0].query.get("after"), None);
    assert_eq!(pages[1].query.get("after").map(String::as_str), Some("2"));
}

#[tokio::test]
async fn reprocess_goes_on_past_a_refused_file_and_then_fails() {
    let stub = Stub::start().await;
    let (result, out) = stub
        .run(&["files", "reprocess", REFUSED_FILE, QUEUED_FILE])
        .await;
    assert_eq!(result.expect("reprocess runs"), Outcome::Failure);
    assert!(
        out.contains(
            "not_reprocessable: a file in status processing cannot be reprocessed now (HTTP 409)"
        ),
        "{out}"
    );
    assert!(out.contains("reprocessing (status queued)"), "{out}");
    assert_eq!(
        stub.seen("POST", &format!("/v1/files/{QUEUED_FILE}/reprocess"))
            .len(),
        1
    );
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_with_a_hint() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let cli = Cli::try_parse_from([
        "fleetctl",
        "--api-url",
        &format!("http://{address}"),
        "--token",
        "t",
        "queues",
    ])
    .expect("parses");
    let mut out = Vec::new();
    let error = fleetctl::run(cli, &quiet(), &mut out)
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, FleetError::Connect { .. }), "{error:?}");
    let report = error.report();
    assert!(
        report.contains(&format!(
            "cannot connect to api-lite at http://{address}/v1/ops/queues"
        )),
        "{report}"
    );
    assert!(report.contains("hint: is api-lite running"), "{report}");
}

/// The binary: stdout and exit codes as a script sees them, stderr not a terminal.
async fn fleetctl_binary(stub_url: &str, arguments: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(arguments)
        .env("FLEETCTL_API_URL", stub_url)
        .env_remove("FLEETCTL_TOKEN")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("fleetctl runs");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn binary_maps_results_to_exit_codes() {
    let stub = Stub::start().await;

    let (code, stdout, stderr) = fleetctl_binary(
        &stub.url,
        &["--token", OPS_TOKEN, "dlq", "redrive", "file-jobs", "--all"],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout,
        "moved 3 of 3 messages from file-jobs-dlq to file-jobs (receive_send_delete)\n"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no bar drawn on a pipe: {stderr:?}"
    );

    let (code, stdout, stderr) =
        fleetctl_binary(&stub.url, &["--token", "org-token", "queues"]).await;
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.starts_with(
            "fleetctl: forbidden: this route needs a token with the ops role (HTTP 403)\nhint: "
        ),
        "{stderr}"
    );

    let (code, _, stderr) = fleetctl_binary(&stub.url, &["queues"]).await;
    assert_eq!(code, 2, "no token is a usage error");
    assert!(stderr.contains("no token"), "{stderr}");

    let (code, _, stderr) = fleetctl_binary(
        &stub.url,
        &["--token", OPS_TOKEN, "dlq", "redrive", "file-jobs"],
    )
    .await;
    assert_eq!(code, 2, "a redrive without a selector is a usage error");
    assert!(stderr.contains("required"), "{stderr}");

    let (code, _, stderr) = fleetctl_binary(
        &stub.url,
        &["--token", OPS_TOKEN, "dlq", "discard", "file-jobs", "--all"],
    )
    .await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("pass --yes"), "{stderr}");
    assert!(
        stub.seen("POST", "/v1/ops/dlq/file-jobs/discard")
            .is_empty()
    );
}
