//! OpenTelemetry across processes: api-lite and worker-files run as real processes that
//! export spans over OTLP/HTTP to a receiver on loopback. One upload, made by a client
//! that sends its own `traceparent`, must come back as one trace: the client's requests in
//! api-lite, then (through the outbox row and the SQS message's attributes) the worker's
//! job and each of its stages.

use std::time::Duration;

use serde_json::json;
use testkit::TestApp;
use testkit::otlp::{OtlpReceiver, ReceivedSpan};
use uuid::Uuid;

const WORKER: &str = env!("CARGO_BIN_EXE_worker-files");
const PROCESSING: Duration = Duration::from_secs(90);

fn in_trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.trace_id == trace_id)
        .collect()
}

#[tokio::test]
async fn one_upload_is_one_trace_across_api_lite_and_worker_files() {
    let mut app = TestApp::spawn().await.unwrap();
    let receiver = OtlpReceiver::start().await.unwrap();
    let otel = receiver.env();
    let otel: Vec<(&str, &str)> = otel.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // api-lite as a process of its own, exporting spans; the client talks to it alone.
    let (_api, api_url) = app.spawn_api_process(&otel).await.unwrap();
    let _worker = app.spawn_worker(WORKER, &otel).unwrap();
    app.base_url = api_url;

    // The client's own trace: every request of the upload carries it.
    let (trace_id, client_span, traceparent) = OtlpReceiver::client_trace();
    let text = "Tide tables for the northern harbour, with the ferry times of each season.";
    let (status, created) = app
        .post_traced(
            "/v1/files",
            json!({ "name": "tides.txt", "content_type": "text/plain", "size": text.len() }),
            &traceparent,
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{created}");
    let file_id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let put = app
        .http
        .put(created["upload"]["url"].as_str().unwrap())
        .header("content-type", "text/plain")
        .body(text)
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let (status, confirmed) = app
        .post_traced(
            &format!("/v1/files/{file_id}/confirm"),
            json!({}),
            &traceparent,
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{confirmed}");
    app.wait_for_file(file_id, &["ready"], PROCESSING)
        .await
        .unwrap();

    let stages = ["download", "extract_and_chunk", "embed", "store"];
    let spans = receiver
        .wait_for(Duration::from_secs(30), |spans| {
            let trace = in_trace(spans, &trace_id);
            // A span is exported when it ends: the job's after the file's last commit.
            ["job"].iter().chain(&stages).all(|stage| {
                trace
                    .iter()
                    .any(|span| span.service == "worker-files" && span.name == *stage)
            })
        })
        .await
        .unwrap();
    let trace: Vec<&ReceivedSpan> = in_trace(&spans, &trace_id);

    // api-lite: both requests, children of the client's span.
    let requests: Vec<_> = trace
        .iter()
        .filter(|span| span.service == "api-lite" && span.name == "request")
        .collect();
    assert_eq!(requests.len(), 2, "{trace:#?}");
    assert!(
        requests
            .iter()
            .all(|span| span.parent_span_id == client_span),
        "{trace:#?}"
    );
    // worker-files: one job span, whose parent is a span of api-lite's in this trace (the
    // confirm request that wrote the outbox row), and each stage under the job.
    let jobs: Vec<_> = trace
        .iter()
        .filter(|span| span.service == "worker-files" && span.name == "job")
        .collect();
    assert_eq!(jobs.len(), 1, "{trace:#?}");
    let job = jobs[0];
    assert!(
        trace
            .iter()
            .any(|span| span.service == "api-lite" && span.span_id == job.parent_span_id),
        "the job's parent is not an api-lite span of the trace: {trace:#?}"
    );
    for stage in stages {
        let stage_span = trace
            .iter()
            .find(|span| span.service == "worker-files" && span.name == stage)
            .unwrap();
        assert_eq!(
            stage_span.parent_span_id, job.span_id,
            "{stage}: {trace:#?}"
        );
    }
    // Nothing of this upload's processing went into another trace.
    let jobs_elsewhere = spans
        .iter()
        .filter(|span| span.service == "worker-files" && span.name == "job")
        .filter(|span| span.trace_id != trace_id)
        .count();
    assert_eq!(jobs_elsewhere, 0, "{spans:#?}");
}
