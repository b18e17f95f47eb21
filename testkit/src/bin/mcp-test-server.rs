//! `mcp-test-server CALLS_LOG`: testkit's MCP test server on the stdio transport (see
//! `testkit::mcp`). Every tool call is appended to CALLS_LOG.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls_log = std::env::args()
        .nth(1)
        .context("usage: mcp-test-server CALLS_LOG")?;
    testkit::mcp::serve_stdio(calls_log.into()).await
}
