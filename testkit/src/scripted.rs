//! Scripted OpenAI-compatible servers on loopback, the one stand-in the tests use: no
//! real remote model can run here. A script is a list of replies served in order; once
//! it runs out, the last reply repeats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy)]
pub enum EmbeddingReply {
    /// Answer with deterministic vectors of the requested (or 8) dimensions.
    Vectors,
    /// Answer with this HTTP status and an OpenAI-style error body.
    Status(u16),
}

struct ScriptState {
    script: Vec<EmbeddingReply>,
    requests: AtomicUsize,
}

/// A running scripted `/embeddings` endpoint.
pub struct ScriptedEmbeddings {
    pub address: SocketAddr,
    state: Arc<ScriptState>,
}

impl ScriptedEmbeddings {
    pub async fn start(script: Vec<EmbeddingReply>) -> anyhow::Result<Self> {
        anyhow::ensure!(!script.is_empty(), "a script needs at least one reply");
        let state = Arc::new(ScriptState {
            script,
            requests: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { address, state })
    }

    /// The base URL to configure (`GLASSBOX_EMBEDDING__BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

async fn embeddings(State(state): State<Arc<ScriptState>>, Json(request): Json<Value>) -> Response {
    let position = state.requests.fetch_add(1, Ordering::SeqCst);
    let reply = state.script[position.min(state.script.len() - 1)];
    match reply {
        EmbeddingReply::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(json!({ "error": { "message": format!("scripted failure {code}"), "type": "server_error", "code": null } }))).into_response()
        }
        EmbeddingReply::Vectors => {
            let dimensions = request["dimensions"].as_u64().unwrap_or(8) as usize;
            let inputs: Vec<String> = match &request["input"] {
                Value::String(text) => vec![text.clone()],
                Value::Array(items) => items
                    .iter()
                    .map(|item| item.as_str().unwrap_or_default().to_string())
                    .collect(),
                _ => Vec::new(),
            };
            let data: Vec<Value> = inputs
                .iter()
                .enumerate()
                .map(|(index, text)| json!({ "object": "embedding", "index": index, "embedding": pseudo_vector(text, dimensions) }))
                .collect();
            let tokens: usize = inputs.iter().map(|text| text.len() / 4 + 1).sum();
            Json(json!({ "object": "list", "data": data, "model": request["model"], "usage": { "prompt_tokens": tokens, "total_tokens": tokens } })).into_response()
        }
    }
}

/// A unit vector derived from the text, so equal texts get equal vectors.
fn pseudo_vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut seed: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        seed = (seed ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut values: Vec<f32> = (0..dimensions)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = values
        .iter()
        .map(|value| value * value)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    values.iter_mut().for_each(|value| *value /= norm);
    values
}
