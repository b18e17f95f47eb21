//! Tools from MCP servers (the Model Context Protocol), configured per org in the
//! worker's settings (`GLASSBOX_AGENT_WORKER__MCP_SERVERS__<NAME>__*`, see docs/mcp.md).
//!
//! Each server is connected on first use and its tool list cached for the worker's life;
//! a server that cannot be reached is left out of a run's tools (with a warning) and
//! tried again for the next run. The model sees a server's tool `lookup` as
//! `<server>__lookup`. MCP tools go through the same registry policies (allow, deny,
//! require approval), the same ledger and the same trace as built-in tools
//! ([`crate::tools::AnyTool`]): a tool not declared idempotent has its model answer
//! recorded before it runs and is not run again after a crash left its outcome unknown.

/// The JSON-RPC client and its two transports.
pub mod client;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use shared::config::{McpServerSettings, ToolPolicy};
use tokio::sync::Mutex;
use uuid::Uuid;

use self::client::{ListedTool, McpClient, McpError};

/// Separates the server's name from the tool's in the name the model sees.
pub const NAME_SEPARATOR: &str = "__";

/// One configured server, its session and its tool list once known.
pub struct McpServer {
    pub name: String,
    settings: McpServerSettings,
    session: Mutex<Option<Arc<McpClient>>>,
    tools: Mutex<Option<Arc<Vec<ListedTool>>>>,
}

/// An MCP tool as a run sees it.
#[derive(Clone)]
pub struct McpTool {
    pub server: Arc<McpServer>,
    /// The name the server knows it by.
    pub remote_name: String,
    /// `<server>__<tool>`: the name the model calls it by.
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub idempotent: bool,
    pub policy: ToolPolicy,
}

impl std::fmt::Debug for McpTool {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("McpTool")
            .field("name", &self.name)
            .field("idempotent", &self.idempotent)
            .field("policy", &self.policy)
            .finish()
    }
}

impl McpTool {
    /// The function schema offered to the model.
    pub fn schema(&self) -> Value {
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_schema,
            }
        })
    }

    /// Runs the tool on its server. A transport failure is an error (the call's outcome
    /// is unknown); a tool or JSON-RPC error is an outcome for the model.
    pub async fn call(&self, arguments: &Value) -> Result<Result<Value, String>, McpError> {
        let client = self.server.client().await?;
        match client.call_tool(&self.remote_name, arguments).await {
            Ok(outcome) => Ok(outcome),
            Err(McpError::Rpc { code, message }) => Ok(Err(format!(
                "the MCP server refused the call ({code}): {message}"
            ))),
            Err(error) => {
                // The session may be broken: the next call connects again.
                self.server.forget_session().await;
                Err(error)
            }
        }
    }
}

impl McpServer {
    async fn client(&self) -> Result<Arc<McpClient>, McpError> {
        let mut session = self.session.lock().await;
        if let Some(client) = session.as_ref() {
            return Ok(client.clone());
        }
        let client = Arc::new(McpClient::connect(&self.settings).await?);
        *session = Some(client.clone());
        Ok(client)
    }

    async fn forget_session(&self) {
        *self.session.lock().await = None;
    }

    async fn listed_tools(&self) -> Result<Arc<Vec<ListedTool>>, McpError> {
        let mut tools = self.tools.lock().await;
        if let Some(listed) = tools.as_ref() {
            return Ok(listed.clone());
        }
        let client = self.client().await?;
        let listed = match client.list_tools().await {
            Ok(listed) => Arc::new(listed),
            Err(error) => {
                self.forget_session().await;
                return Err(error);
            }
        };
        *tools = Some(listed.clone());
        Ok(listed)
    }

    fn tool(self: &Arc<Self>, listed: &ListedTool) -> McpTool {
        let idempotent = self.settings.idempotent_tools.contains(&listed.name);
        let policy = self
            .settings
            .tool_policy
            .get(&listed.name)
            .copied()
            .unwrap_or(if idempotent {
                ToolPolicy::Allow
            } else {
                ToolPolicy::RequireApproval
            });
        McpTool {
            server: self.clone(),
            remote_name: listed.name.clone(),
            name: format!("{}{NAME_SEPARATOR}{}", self.name, listed.name),
            description: listed.description.clone(),
            input_schema: listed.input_schema.clone(),
            idempotent,
            policy,
        }
    }
}

/// The worker's MCP servers.
#[derive(Default)]
pub struct McpServers {
    servers: Vec<Arc<McpServer>>,
}

impl McpServers {
    pub fn new(settings: &BTreeMap<String, McpServerSettings>) -> Self {
        Self {
            servers: settings
                .iter()
                .map(|(name, server)| {
                    Arc::new(McpServer {
                        name: name.clone(),
                        settings: server.clone(),
                        session: Mutex::new(None),
                        tools: Mutex::new(None),
                    })
                })
                .collect(),
        }
    }

    /// The MCP tools an org's runs may see. A server that cannot be reached is left out
    /// (and tried again next time).
    pub async fn tools_for(&self, org_id: Uuid) -> Vec<McpTool> {
        let mut tools = Vec::new();
        for server in &self.servers {
            if !server.settings.orgs.contains(&org_id) {
                continue;
            }
            match server.listed_tools().await {
                Ok(listed) => tools.extend(listed.iter().map(|tool| server.tool(tool))),
                Err(error) => {
                    tracing::warn!(server = %server.name, %error, "mcp server unavailable; its tools are left out of this run")
                }
            }
        }
        tools
    }
}
