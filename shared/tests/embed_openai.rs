//! The OpenAI-compatible embedder against a scripted server on loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::embed::{EmbedError, Embedder, OpenAiEmbedder, OpenAiOptions};

/// Decides the answer to the n-th request (0-based) with the given JSON body.
type Script = dyn Fn(usize, &Value) -> Response + Send + Sync;

struct Server {
    base_url: String,
    requests: Arc<AtomicUsize>,
    bodies: Arc<std::sync::Mutex<Vec<(HeaderMap, Value)>>>,
}

#[derive(Clone)]
struct ServerState {
    script: Arc<Script>,
    requests: Arc<AtomicUsize>,
    bodies: Arc<std::sync::Mutex<Vec<(HeaderMap, Value)>>>,
}

async fn handle(
    State(state): State<ServerState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let number = state.requests.fetch_add(1, Ordering::SeqCst);
    let response = (state.script)(number, &body);
    state.bodies.lock().expect("lock").push((headers, body));
    response
}

async fn start(script: impl Fn(usize, &Value) -> Response + Send + Sync + 'static) -> Server {
    let requests = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let state = ServerState {
        script: Arc::new(script),
        requests: Arc::clone(&requests),
        bodies: Arc::clone(&bodies),
    };
    let app = Router::new()
        .route("/v1/embeddings", post(handle))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    Server {
        base_url: format!("http://{address}/v1"),
        requests,
        bodies,
    }
}

/// A successful answer: for input "text-{n}" the vector [1, n, 0], listed in reverse order.
fn success(body: &Value) -> Response {
    let inputs = body["input"].as_array().expect("input array");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(index, input)| {
            let number: f32 = input
                .as_str()
                .and_then(|text| text.strip_prefix("text-"))
                .and_then(|number| number.parse().ok())
                .unwrap_or(0.0);
            json!({ "object": "embedding", "index": index, "embedding": [1.0, number, 0.0] })
        })
        .collect();
    Json(json!({ "object": "list", "data": data, "model": body["model"] })).into_response()
}

fn options(base_url: &str) -> OpenAiOptions {
    OpenAiOptions {
        base_url: base_url.to_owned(),
        api_key: Some("test-key".to_owned()),
        model: "test-embedder".to_owned(),
        dimensions: Some(3),
        max_retries: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        request_timeout: Duration::from_secs(5),
        ..OpenAiOptions::default()
    }
}

fn texts(count: usize) -> Vec<String> {
    (0..count).map(|number| format!("text-{number}")).collect()
}

#[tokio::test]
async fn retries_503_then_succeeds() {
    let server = start(|number, body| {
        if number < 2 {
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded").into_response()
        } else {
            success(body)
        }
    })
    .await;
    let embedder = OpenAiEmbedder::new(options(&server.base_url)).expect("embedder");
    assert_eq!(embedder.model_id(), "openai:test-embedder@3");
    let vectors = embedder.embed(&texts(2)).await.expect("embed");
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    assert_eq!(vectors.len(), 2);

    let bodies = server.bodies.lock().expect("lock");
    let (headers, body) = &bodies[0];
    assert_eq!(headers["authorization"], "Bearer test-key");
    assert_eq!(body["model"], "test-embedder");
    assert_eq!(body["dimensions"], 3);
}

#[tokio::test]
async fn always_500_gives_transient_after_max_retries() {
    let server = start(|_, _| (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()).await;
    let embedder = OpenAiEmbedder::new(options(&server.base_url)).expect("embedder");
    let error = embedder.embed(&texts(1)).await.expect_err("must fail");
    assert!(error.is_transient(), "{error:?}");
    // One attempt plus max_retries (3) retries.
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn bad_request_is_permanent_without_retry() {
    let server = start(|_, _| {
        let body =
            json!({ "error": { "message": "input too long", "type": "invalid_request_error" } });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    })
    .await;
    let embedder = OpenAiEmbedder::new(options(&server.base_url)).expect("embedder");
    let error = embedder.embed(&texts(1)).await.expect_err("must fail");
    match error {
        EmbedError::Permanent { code, message } => {
            assert_eq!(code, "embedding_rejected");
            assert!(message.contains("input too long"), "{message}");
        }
        other => panic!("expected permanent, got {other:?}"),
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn long_retry_after_hands_the_wait_to_the_queue() {
    let server = start(|_, _| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "30")],
            "slow down",
        )
            .into_response()
    })
    .await;
    let embedder = OpenAiEmbedder::new(options(&server.base_url)).expect("embedder");
    let error = embedder.embed(&texts(1)).await.expect_err("must fail");
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    match error {
        EmbedError::Transient { retry_after, .. } => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)));
        }
        other => panic!("expected transient, got {other:?}"),
    }
}

#[tokio::test]
async fn splits_600_inputs_into_3_requests_in_order() {
    let server = start(|_, body| success(body)).await;
    let embedder = OpenAiEmbedder::new(OpenAiOptions {
        max_inputs_per_request: 256,
        ..options(&server.base_url)
    })
    .expect("embedder");
    let vectors = embedder.embed(&texts(600)).await.expect("embed");
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    let sizes: Vec<usize> = server
        .bodies
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, body)| body["input"].as_array().expect("input").len())
        .collect();
    assert_eq!(sizes, vec![256, 256, 88]);
    assert_eq!(vectors.len(), 600);
    for (number, vector) in vectors.iter().enumerate() {
        let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        // [1, n, 0] normalised: the ratio of the first two components is n.
        let recovered = (vector[1] / vector[0]).round() as usize;
        assert_eq!(recovered, number);
    }
}

#[tokio::test]
async fn network_error_is_transient() {
    // Bind then drop a listener so the port refuses connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let embedder = OpenAiEmbedder::new(options(&format!("http://{address}/v1"))).expect("embedder");
    let error = embedder.embed(&texts(1)).await.expect_err("must fail");
    assert!(error.is_transient(), "{error:?}");
}
