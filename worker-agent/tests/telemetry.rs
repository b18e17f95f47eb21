//! OpenTelemetry for an agent run: api-lite and worker-agent run as real processes that
//! export spans to a loopback OTLP receiver. A run started by a client with its own
//! `traceparent` continues that trace through the outbox and the SQS message into the
//! worker's job, each step, and each step's model and tool calls.

use std::time::Duration;

use serde_json::json;
use testkit::TestApp;
use testkit::otlp::{OtlpReceiver, ReceivedSpan};
use testkit::scripted::{ChatReply, ScriptedChat};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-agent");
const RUN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_agent_run_is_one_trace_through_its_steps_model_calls_and_tool_calls() {
    let mut app = TestApp::spawn().await.unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let otel = receiver.env();
    let otel: Vec<(&str, &str)> = otel.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_api, api_url) = app.spawn_api_process(&otel).await.unwrap();
    let chat = ScriptedChat::start(vec![
        ChatReply::tool("get_node_context", json!({})),
        ChatReply::text("done"),
    ])
    .await
    .unwrap();
    let _worker = app.spawn_agent(WORKER, &chat, &otel).unwrap();
    app.base_url = api_url;

    let node = app
        .create_node("Traced", "Read the context, then finish.", json!({}))
        .await
        .unwrap();
    let (trace_id, client_span, traceparent) = OtlpReceiver::client_trace();
    let (status, execution) = app
        .post_traced(
            &format!("/v1/nodes/{node}/execute"),
            json!({}),
            &traceparent,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{execution}");
    let id: Uuid = execution["id"].as_str().unwrap().parse().unwrap();
    let done = app
        .wait_for_execution(id, &["completed", "failed", "cancelled"], RUN)
        .await
        .unwrap();
    assert_eq!(done["status"], "completed", "{done}");

    let named = |spans: &[ReceivedSpan], name: &str| {
        spans
            .iter()
            .filter(|span| span.service == "worker-agent" && span.name == name)
            .count()
    };
    receiver
        .wait_for(Duration::from_secs(30), |spans| {
            let trace: Vec<ReceivedSpan> = spans
                .iter()
                .filter(|span| span.trace_id == trace_id)
                .cloned()
                .collect();
            // A span is exported when it ends: the job's after the run's last commit.
            named(&trace, "job") == 1
                && named(&trace, "step") == 2
                && named(&trace, "model_call") == 2
                && named(&trace, "tool_call") == 1
        })
        .await
        .unwrap();
    let trace = receiver.trace(&trace_id);
    let find = |service: &str, name: &str| -> Vec<&ReceivedSpan> {
        trace
            .iter()
            .filter(|span| span.service == service && span.name == name)
            .collect()
    };

    let requests = find("api-lite", "request");
    assert_eq!(requests.len(), 1, "{trace:#?}");
    assert_eq!(requests[0].parent_span_id, client_span);
    let jobs = find("worker-agent", "job");
    assert_eq!(jobs.len(), 1, "{trace:#?}");
    assert!(
        trace
            .iter()
            .any(|span| span.service == "api-lite" && span.span_id == jobs[0].parent_span_id),
        "the job's parent is not an api-lite span of the trace: {trace:#?}"
    );
    // Two steps (the tool call, then the answer), each under the job; each model call
    // under a step, and the tool call under the first step's span.
    let steps = find("worker-agent", "step");
    assert_eq!(steps.len(), 2, "{trace:#?}");
    assert!(
        steps
            .iter()
            .all(|step| step.parent_span_id == jobs[0].span_id)
    );
    let step_ids: Vec<&str> = steps.iter().map(|step| step.span_id.as_str()).collect();
    for model_call in find("worker-agent", "model_call") {
        assert!(
            step_ids.contains(&model_call.parent_span_id.as_str()),
            "{trace:#?}"
        );
    }
    let tool_call = find("worker-agent", "tool_call")[0];
    assert!(
        step_ids.contains(&tool_call.parent_span_id.as_str()),
        "{trace:#?}"
    );
}
