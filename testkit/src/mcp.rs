//! A small MCP server for tests, over both transports: stdio (the `mcp-test-server`
//! binary, which a worker starts as its child) and streamable HTTP
//! ([`McpTestServer::start_http`], in the test's process).
//!
//! Its tools:
//! - `lookup {query}`: a read; answers `found: <query>`.
//! - `send_message {to, text}`: an effect; answers `sent to <to>`.
//! - `purge {}`: an effect meant to be denied by policy.
//!
//! Every `tools/call` that reaches a tool appends one line, `<tool> <arguments JSON>`,
//! to the calls log (a file, so calls are counted across worker crashes and processes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The protocol revision the server answers with.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

fn tool_list() -> Value {
    json!({ "tools": [
        { "name": "lookup", "description": "Look something up (read only).",
          "inputSchema": { "type": "object", "properties": { "query": { "type": "string" } }, "required": ["query"] } },
        { "name": "send_message", "description": "Send a message to someone (an effect).",
          "inputSchema": { "type": "object", "properties": { "to": { "type": "string" }, "text": { "type": "string" } }, "required": ["to", "text"] } },
        { "name": "purge", "description": "Delete everything (an effect).",
          "inputSchema": { "type": "object", "properties": {} } }
    ] })
}

/// The answer to one JSON-RPC message (None for a notification).
pub fn answer(message: &Value, calls_log: &Path) -> Option<Value> {
    let id = message.get("id")?.clone();
    let result = match message["method"].as_str().unwrap_or_default() {
        "initialize" => Ok(json!({
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "glassbox-mcp-test-server", "version": "1" }
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(tool_list()),
        "tools/call" => call(&message["params"], calls_log),
        other => Err((-32601, format!("unknown method {other}"))),
    };
    Some(match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err((code, message)) => {
            json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
        }
    })
}

fn call(params: &Value, calls_log: &Path) -> Result<Value, (i64, String)> {
    let name = params["name"].as_str().unwrap_or_default();
    let arguments = params.get("arguments").cloned().unwrap_or(json!({}));
    let text = match name {
        "lookup" => format!("found: {}", arguments["query"].as_str().unwrap_or_default()),
        "send_message" => format!("sent to {}", arguments["to"].as_str().unwrap_or_default()),
        "purge" => "purged".to_string(),
        other => return Err((-32602, format!("unknown tool {other}"))),
    };
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(calls_log)
        .map_err(|error| (-32603, error.to_string()))?;
    writeln!(log, "{name} {arguments}").map_err(|error| (-32603, error.to_string()))?;
    Ok(json!({ "content": [{ "type": "text", "text": text }], "isError": false }))
}

/// The tools called so far, in order, from a calls log.
pub fn calls(calls_log: &Path) -> Vec<String> {
    std::fs::read_to_string(calls_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').next().map(str::to_string))
        .collect()
}

/// The stdio transport: one JSON message per line in, one per line out.
pub async fn serve_stdio(calls_log: PathBuf) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(reply) = answer(&message, &calls_log) {
            stdout.write_all(format!("{reply}\n").as_bytes()).await?;
            stdout.flush().await?;
        }
    }
    Ok(())
}

/// The HTTP server's state.
struct HttpState {
    calls_log: PathBuf,
    session: String,
}

/// An MCP server on loopback speaking streamable HTTP.
pub struct McpTestServer {
    pub url: String,
    pub calls_log: PathBuf,
}

impl McpTestServer {
    /// Starts the server; calls are logged to `calls_log`.
    pub async fn start_http(calls_log: PathBuf) -> anyhow::Result<Self> {
        let state = Arc::new(HttpState {
            calls_log: calls_log.clone(),
            session: uuid::Uuid::new_v4().to_string(),
        });
        let router = Router::new()
            .route("/mcp", post(http_message))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            url: format!("http://{address}/mcp"),
            calls_log,
        })
    }

    /// The tools called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        calls(&self.calls_log)
    }
}

/// One POSTed message. `initialize` opens the session; later requests must carry it.
/// Tool calls are answered as an event stream, the rest as JSON, as servers may.
async fn http_message(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let Ok(message) = serde_json::from_str::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let method = message["method"].as_str().unwrap_or_default().to_string();
    let session = headers
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok());
    if method != "initialize" && session != Some(state.session.as_str()) {
        return (StatusCode::BAD_REQUEST, "missing or unknown session").into_response();
    }
    let Some(reply) = answer(&message, &state.calls_log) else {
        return StatusCode::ACCEPTED.into_response();
    };
    let mut response = if method == "tools/call" {
        (
            [("content-type", "text/event-stream")],
            format!("event: message\ndata: {reply}\n\n"),
        )
            .into_response()
    } else {
        ([("content-type", "application/json")], reply.to_string()).into_response()
    };
    if method == "initialize" {
        response.headers_mut().insert(
            "mcp-session-id",
            HeaderValue::from_str(&state.session).expect("a uuid is a header value"),
        );
    }
    response
}
