//! A tiny OTLP/HTTP trace receiver on loopback: it accepts `POST /v1/traces` in the JSON
//! encoding (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) and keeps every span it is sent,
//! with the `service.name` of its resource, so a test can follow one trace across
//! processes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// One span as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    /// Lowercase hex, as the OTLP JSON encoding writes ids.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

pub struct OtlpReceiver {
    pub address: SocketAddr,
    spans: Spans,
    stop: CancellationToken,
}

impl OtlpReceiver {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let spans = Spans::default();
        let router = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let (stop, _task) = crate::serve_until_stopped(listener, router);
        Ok(Self {
            address,
            spans,
            stop,
        })
    }

    /// The base URL for `OTEL_EXPORTER_OTLP_ENDPOINT` (the exporter adds `/v1/traces`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The variables that point a process's exporter here, flushing often.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".into()),
        ]
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("not poisoned").clone()
    }

    /// The spans of one trace received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|span| span.trace_id == trace_id)
            .collect()
    }

    /// A client's own W3C trace: `(trace id, span id, traceparent header value)`.
    pub fn client_trace() -> (String, String, String) {
        let trace_id = uuid::Uuid::new_v4().simple().to_string();
        let span_id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
        let traceparent = format!("00-{trace_id}-{span_id}-01");
        (trace_id, span_id, traceparent)
    }

    /// Waits until `condition` holds over the spans received so far.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        condition: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> anyhow::Result<Vec<ReceivedSpan>> {
        let started = Instant::now();
        loop {
            let spans = self.spans();
            if condition(&spans) {
                return Ok(spans);
            }
            if started.elapsed() > timeout {
                anyhow::bail!(
                    "the spans received in {timeout:?} do not meet the condition: {spans:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(
    State(spans): State<Spans>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, &'static str) {
    let is_json = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !is_json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this receiver reads OTLP/JSON only",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON");
    };
    spans
        .lock()
        .expect("not poisoned")
        .extend(parse_export(&request));
    (StatusCode::OK, "{}")
}

/// The spans of an `ExportTraceServiceRequest` in its JSON encoding.
fn parse_export(request: &Value) -> Vec<ReceivedSpan> {
    let text = |value: &Value, key: &str| value[key].as_str().unwrap_or_default().to_string();
    let mut out = Vec::new();
    for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource_spans["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|attribute| attribute["key"] == "service.name")
            .and_then(|attribute| attribute["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_string();
        for scope_spans in resource_spans["scopeSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for span in scope_spans["spans"].as_array().into_iter().flatten() {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    name: text(span, "name"),
                    trace_id: text(span, "traceId").to_ascii_lowercase(),
                    span_id: text(span, "spanId").to_ascii_lowercase(),
                    parent_span_id: text(span, "parentSpanId").to_ascii_lowercase(),
                });
            }
        }
    }
    out
}
