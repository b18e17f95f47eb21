//! A Model Context Protocol client: JSON-RPC 2.0 over the stdio transport (a child
//! process, one JSON message per line) or the streamable HTTP transport (each message
//! POSTed to one endpoint, the answer as JSON or as a server-sent-events stream, the
//! session in the `Mcp-Session-Id` header). Only what an agent needs: the handshake,
//! `tools/list` and `tools/call`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use shared::config::{McpServerSettings, McpTransport};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex, oneshot};

/// The protocol revision this client speaks.
pub const PROTOCOL_VERSION: &str = "2025-06-18";

/// Why a request to an MCP server failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The server could not be reached or stopped answering: the request may or may
    /// not have been carried out.
    #[error("MCP server unreachable: {0}")]
    Transport(String),
    /// The server answered something that is not MCP.
    #[error("MCP server answered out of protocol: {0}")]
    Protocol(String),
    /// The server answered with a JSON-RPC error.
    #[error("MCP error {code}: {message}")]
    Rpc { code: i64, message: String },
}

/// A tool as the server lists it.
#[derive(Debug, Clone)]
pub struct ListedTool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}

/// A connected, initialised MCP session.
pub struct McpClient {
    transport: Transport,
    next_id: AtomicU64,
    timeout: Duration,
}

enum Transport {
    Stdio(Box<StdioTransport>),
    Http(Box<HttpTransport>),
}

struct StdioTransport {
    stdin: Mutex<ChildStdin>,
    pending: Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Value>>>>,
    /// Kept so the child dies with the client.
    _child: Child,
}

struct HttpTransport {
    http: reqwest::Client,
    url: String,
    session: std::sync::Mutex<Option<String>>,
}

impl McpClient {
    /// Connects to the server `settings` describe and runs the handshake.
    pub async fn connect(settings: &McpServerSettings) -> Result<Self, McpError> {
        let timeout = Duration::from_secs(settings.timeout_secs.max(1));
        let transport = match settings.transport {
            McpTransport::Stdio => Transport::Stdio(Box::new(StdioTransport::spawn(settings)?)),
            McpTransport::Http => Transport::Http(Box::new(HttpTransport {
                http: reqwest::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(|error| McpError::Transport(error.to_string()))?,
                url: settings
                    .url
                    .clone()
                    .ok_or_else(|| McpError::Transport("no url configured".into()))?,
                session: std::sync::Mutex::new(None),
            })),
        };
        let client = Self {
            transport,
            next_id: AtomicU64::new(1),
            timeout,
        };
        let initialized = client
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": { "name": "glassbox-worker-agent", "version": env!("CARGO_PKG_VERSION") },
                }),
            )
            .await?;
        if initialized.get("protocolVersion").is_none() {
            return Err(McpError::Protocol(
                "initialize answered without a protocolVersion".into(),
            ));
        }
        client
            .notify("notifications/initialized", json!({}))
            .await?;
        Ok(client)
    }

    /// Every tool the server offers (following `nextCursor`).
    pub async fn list_tools(&self) -> Result<Vec<ListedTool>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let params = match &cursor {
                Some(cursor) => json!({ "cursor": cursor }),
                None => json!({}),
            };
            let page = self.request("tools/list", params).await?;
            let listed = page["tools"]
                .as_array()
                .ok_or_else(|| McpError::Protocol("tools/list answered without tools".into()))?;
            for tool in listed {
                let name = tool["name"]
                    .as_str()
                    .ok_or_else(|| McpError::Protocol("a listed tool has no name".into()))?;
                tools.push(ListedTool {
                    name: name.to_string(),
                    description: tool["description"].as_str().unwrap_or_default().to_string(),
                    input_schema: tool
                        .get("inputSchema")
                        .cloned()
                        .unwrap_or_else(|| json!({ "type": "object" })),
                });
            }
            cursor = page["nextCursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                return Ok(tools);
            }
        }
    }

    /// Calls a tool. `Ok(Err(text))` is the tool's own failure (`isError`), for the model.
    pub async fn call_tool(
        &self,
        name: &str,
        arguments: &Value,
    ) -> Result<Result<Value, String>, McpError> {
        let result = self
            .request(
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
            )
            .await?;
        let text: Vec<&str> = result["content"]
            .as_array()
            .map(|content| {
                content
                    .iter()
                    .filter(|part| part["type"] == "text")
                    .filter_map(|part| part["text"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if result["isError"].as_bool() == Some(true) {
            return Ok(Err(text.join("\n")));
        }
        Ok(Ok(match result.get("structuredContent") {
            Some(structured) => json!({ "content": text.join("\n"), "structured": structured }),
            None => json!({ "content": text.join("\n") }),
        }))
    }

    async fn request(&self, method: &str, params: Value) -> Result<Value, McpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let message = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let answer = match &self.transport {
            Transport::Stdio(stdio) => {
                tokio::time::timeout(self.timeout, stdio.request(id, &message))
                    .await
                    .map_err(|_| McpError::Transport(format!("no answer to {method} in time")))??
            }
            Transport::Http(http) => http.request(id, &message).await?,
        };
        if let Some(error) = answer.get("error") {
            return Err(McpError::Rpc {
                code: error["code"].as_i64().unwrap_or(0),
                message: error["message"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string(),
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| McpError::Protocol(format!("{method} answered without a result")))
    }

    async fn notify(&self, method: &str, params: Value) -> Result<(), McpError> {
        let message = json!({ "jsonrpc": "2.0", "method": method, "params": params });
        match &self.transport {
            Transport::Stdio(stdio) => stdio.send(&message).await,
            Transport::Http(http) => http.post(&message).await.map(|_| ()),
        }
    }
}

impl StdioTransport {
    fn spawn(settings: &McpServerSettings) -> Result<Self, McpError> {
        let program = settings
            .command
            .as_deref()
            .ok_or_else(|| McpError::Transport("no command configured".into()))?;
        let mut child = Command::new(program)
            .args(&settings.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| McpError::Transport(format!("starting {program}: {error}")))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let pending: Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Value>>>> = Arc::default();
        let routes = pending.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(message) = serde_json::from_str::<Value>(&line) else {
                    tracing::debug!(line, "ignoring a non-JSON line from an MCP server");
                    continue;
                };
                // Requests and notifications from the server are not needed here.
                let Some(id) = message.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                if message.get("method").is_some() {
                    continue;
                }
                let waiting = routes.lock().expect("not poisoned").remove(&id);
                if let Some(waiting) = waiting {
                    let _ = waiting.send(message);
                }
            }
            // The server is gone: every waiting request fails.
            routes.lock().expect("not poisoned").clear();
        });
        Ok(Self {
            stdin: Mutex::new(stdin),
            pending,
            _child: child,
        })
    }

    async fn send(&self, message: &Value) -> Result<(), McpError> {
        let mut line = message.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|error| McpError::Transport(error.to_string()))?;
        stdin
            .flush()
            .await
            .map_err(|error| McpError::Transport(error.to_string()))
    }

    async fn request(&self, id: u64, message: &Value) -> Result<Value, McpError> {
        let (answer, waiting) = oneshot::channel();
        self.pending
            .lock()
            .expect("not poisoned")
            .insert(id, answer);
        self.send(message).await?;
        waiting
            .await
            .map_err(|_| McpError::Transport("the MCP server exited".into()))
    }
}

impl HttpTransport {
    async fn post(&self, message: &Value) -> Result<reqwest::Response, McpError> {
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL_VERSION)
            .body(message.to_string());
        let session = self.session.lock().expect("not poisoned").clone();
        if let Some(session) = session {
            request = request.header("mcp-session-id", session);
        }
        let response = request
            .send()
            .await
            .map_err(|error| McpError::Transport(error.to_string()))?;
        if let Some(session) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
        {
            *self.session.lock().expect("not poisoned") = Some(session.to_string());
        }
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(McpError::Transport(format!(
                "the MCP endpoint answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(McpError::Protocol(format!(
                "the MCP endpoint answered {status}"
            )));
        }
        Ok(response)
    }

    async fn request(&self, id: u64, message: &Value) -> Result<Value, McpError> {
        let response = self.post(message).await?;
        let is_stream = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|content_type| content_type.starts_with("text/event-stream"));
        let body = response
            .text()
            .await
            .map_err(|error| McpError::Transport(error.to_string()))?;
        if !is_stream {
            return serde_json::from_str(&body)
                .map_err(|error| McpError::Protocol(format!("not JSON: {error}")));
        }
        // Server-sent events: the answer is the `data` of the event that carries our id.
        for event in body.split("\n\n") {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            if data.is_empty() {
                continue;
            }
            if let Ok(message) = serde_json::from_str::<Value>(&data.join("\n"))
                && message.get("id").and_then(Value::as_u64) == Some(id)
            {
                return Ok(message);
            }
        }
        Err(McpError::Transport(
            "the event stream ended without the answer".into(),
        ))
    }
}
