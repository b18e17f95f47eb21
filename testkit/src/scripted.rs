//! Scripted OpenAI-compatible servers on loopback, the one stand-in the tests use: no
//! real remote model can run here. A script is a list of replies served in order; once
//! it runs out, the last reply repeats.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

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
    /// Added before every answer, in milliseconds.
    latency_ms: AtomicU64,
}

/// A running scripted `/embeddings` endpoint, which a test may take down (nothing
/// listens on its port: connections are refused) and bring back on the same port.
pub struct ScriptedEmbeddings {
    pub address: SocketAddr,
    state: Arc<ScriptState>,
    server: std::sync::Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
}

impl ScriptedEmbeddings {
    pub async fn start(script: Vec<EmbeddingReply>) -> anyhow::Result<Self> {
        anyhow::ensure!(!script.is_empty(), "a script needs at least one reply");
        let state = Arc::new(ScriptState {
            script,
            requests: AtomicUsize::new(0),
            latency_ms: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let endpoint = Self {
            address,
            state,
            server: std::sync::Mutex::new(None),
        };
        endpoint.serve(listener);
        Ok(endpoint)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let router = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(self.state.clone());
        *self.server.lock().expect("not poisoned") =
            Some(crate::serve_until_stopped(listener, router));
    }

    /// The base URL to configure (`GLASSBOX_EMBEDDING__BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Every answer waits this long first.
    pub fn set_latency(&self, latency: std::time::Duration) {
        self.state
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops listening and closes every idle connection: requests are refused until
    /// [`Self::come_back`]. Answers in progress at that moment still finish.
    pub async fn go_down(&self) {
        let server = self.server.lock().expect("not poisoned").take();
        if let Some((stop, task)) = server {
            // Connections close once idle; the accept loop (and its listener) goes at once.
            stop.cancel();
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    pub async fn come_back(&self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let listener = loop {
            match tokio::net::TcpListener::bind(self.address).await {
                Ok(listener) => break listener,
                Err(error) if started.elapsed() < std::time::Duration::from_secs(10) => {
                    tracing::debug!(%error, "port not free yet");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        self.serve(listener);
        Ok(())
    }
}

async fn embeddings(State(state): State<Arc<ScriptState>>, Json(request): Json<Value>) -> Response {
    let position = state.requests.fetch_add(1, Ordering::SeqCst);
    let latency = state.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
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

/// One scripted chat completion.
#[derive(Debug, Clone)]
pub enum ChatReply {
    /// A final answer without tool calls.
    Text(String),
    /// Tool calls as (name, raw JSON arguments); the raw text may be malformed on purpose.
    ToolCalls(Vec<(String, String)>),
    /// This HTTP status with an OpenAI-style error body.
    Status(u16),
    /// Waits, then answers with the inner reply.
    Slow(std::time::Duration, Box<ChatReply>),
}

impl ChatReply {
    pub fn text(text: &str) -> Self {
        Self::Text(text.to_string())
    }

    /// One tool call with well-formed arguments.
    pub fn tool(name: &str, arguments: Value) -> Self {
        Self::ToolCalls(vec![(name.to_string(), arguments.to_string())])
    }

    pub fn slow(delay: std::time::Duration, reply: ChatReply) -> Self {
        Self::Slow(delay, Box::new(reply))
    }
}

/// Tokens every scripted completion reports, so tests can check the counters exactly.
pub const CHAT_TOKENS_IN: u64 = 100;
pub const CHAT_TOKENS_OUT: u64 = 20;

struct ChatState {
    /// Replies per agent step; within a step, one reply per attempt (the last repeats).
    steps: Vec<Vec<ChatReply>>,
    attempts: std::sync::Mutex<std::collections::HashMap<usize, usize>>,
    requests: std::sync::Mutex<Vec<Value>>,
}

/// A scripted OpenAI-compatible `/chat/completions` endpoint for agent tests.
///
/// The reply depends on the conversation, not on the request count: the step is the
/// number of assistant messages in the request, so a step redone after a crash gets the
/// same reply again (its next attempt's, when the step scripts several). Past the end of
/// the script the last step repeats. Tool call ids are `call_{step}_{index}`.
pub struct ScriptedChat {
    pub address: SocketAddr,
    state: Arc<ChatState>,
}

impl ScriptedChat {
    /// One reply per step.
    pub async fn start(steps: Vec<ChatReply>) -> anyhow::Result<Self> {
        Self::start_with_attempts(steps.into_iter().map(|reply| vec![reply]).collect()).await
    }

    /// Several replies per step, served to successive attempts of that step.
    pub async fn start_with_attempts(steps: Vec<Vec<ChatReply>>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !steps.is_empty() && steps.iter().all(|step| !step.is_empty()),
            "a chat script needs at least one reply per step"
        );
        let state = Arc::new(ChatState {
            steps,
            attempts: Default::default(),
            requests: Default::default(),
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self { address, state })
    }

    /// The base URL to configure (`GLASSBOX_LLM__BASE_URL`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    /// Every request body received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().expect("not poisoned").clone()
    }

    /// How many requests asked for `step`.
    pub fn requests_for_step(&self, step: usize) -> usize {
        self.requests()
            .iter()
            .filter(|request| step_of(request) == step)
            .count()
    }
}

fn step_of(request: &Value) -> usize {
    request["messages"]
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter(|message| message["role"] == "assistant")
                .count()
        })
        .unwrap_or(0)
}

async fn chat(State(state): State<Arc<ChatState>>, Json(request): Json<Value>) -> Response {
    let step = step_of(&request);
    let attempt = {
        let mut attempts = state.attempts.lock().expect("not poisoned");
        let counter = attempts.entry(step).or_insert(0);
        *counter += 1;
        *counter - 1
    };
    state
        .requests
        .lock()
        .expect("not poisoned")
        .push(request.clone());
    let replies = &state.steps[step.min(state.steps.len() - 1)];
    let mut reply = replies[attempt.min(replies.len() - 1)].clone();
    while let ChatReply::Slow(delay, inner) = reply {
        tokio::time::sleep(delay).await;
        reply = *inner;
    }
    let message = match reply {
        ChatReply::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, Json(json!({ "error": { "message": format!("scripted failure {code}"), "type": "server_error", "code": null } }))).into_response();
        }
        ChatReply::Text(text) => json!({ "role": "assistant", "content": text }),
        ChatReply::ToolCalls(calls) => {
            let tool_calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(index, (name, arguments))| json!({ "id": format!("call_{step}_{index}"), "type": "function", "function": { "name": name, "arguments": arguments } }))
                .collect();
            json!({ "role": "assistant", "content": null, "tool_calls": tool_calls })
        }
        ChatReply::Slow(..) => unreachable!("unwrapped above"),
    };
    let finish_reason = if message["tool_calls"].is_array() {
        "tool_calls"
    } else {
        "stop"
    };
    Json(json!({
        "id": format!("chatcmpl-{step}-{attempt}"),
        "object": "chat.completion",
        "model": request["model"],
        "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason }],
        "usage": { "prompt_tokens": CHAT_TOKENS_IN, "completion_tokens": CHAT_TOKENS_OUT, "total_tokens": CHAT_TOKENS_IN + CHAT_TOKENS_OUT }
    }))
    .into_response()
}
