//! worker-agent: runs LLM agent executions one durable step at a time.
//!
//! # Layout
//! - [`handler`]: the agent job as the worker loop sees it: claim, run, renew, record a
//!   failure, release; every status change is a transition of `shared::executions`.
//! - [`step`]: the step loop: control check, model call (or the answer recorded before a
//!   crash), tool calls, one fenced commit per step; parking and cancels.
//! - [`ledger`]: the tool ledger that keeps tool effects exactly-once, `write_output`'s
//!   effect included.
//! - [`checkpoint`]: loads the run (its row, node and conversation from step deltas).
//! - [`llm`]: the [`llm::ChatModel`] trait and the OpenAI-compatible chat client, and the
//!   cost of a call.
//! - [`tools`]: the tool registry: schemas, policies, argument checks, tool bodies.
//! - [`mcp`]: tools from MCP servers (stdio and streamable HTTP), configured per org.
//! - [`wakes`]: LISTEN/NOTIFY wake-ups that bring a pause or cancel to a running run.
//! - [`retention`]: deletes the checkpoints of long-finished executions.
//! - [`failpoint`]: named stopping points for crash tests.
//!
//! The worker loop itself (receive, claim, heartbeat, retry, shutdown) is the shared one
//! in `shared::worker`; this crate only supplies the [`handler::AgentHandler`].

/// Loading a run and its conversation.
pub mod checkpoint;
/// Named failure points for tests.
pub mod failpoint;
/// The agent job handler.
pub mod handler;
/// The tool ledger.
pub mod ledger;
/// The model client.
pub mod llm;
/// MCP servers and their tools.
pub mod mcp;
/// Checkpoint retention.
pub mod retention;
/// The step loop.
pub mod step;
/// The tool registry.
pub mod tools;
/// Control wake-ups by LISTEN/NOTIFY.
pub mod wakes;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use shared::aws::AwsClients;
use shared::config::Settings;
use shared::openai_http::HttpOptions;
use shared::queue::Queue;
use shared::worker::{Handlers, WorkerOptions, run_worker};
use tokio_util::sync::CancellationToken;

use crate::handler::AgentHandler;
use crate::llm::OpenAiChat;
use crate::mcp::McpServers;
use crate::tools::{Registry, ToolContext};
use crate::wakes::ControlWakes;

/// Runs the worker until `shutdown` fires and in-flight steps are done or released.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = shared::db::connect(&settings.database).await?;
    let aws = AwsClients::new(&settings.aws).await;
    let queue =
        Queue::from_settings(&aws.sqs, &settings.queues.agent_jobs, &settings.queues).await?;
    let worker_settings = settings.agent_worker.clone();
    worker_settings
        .validate()
        .context("invalid agent worker settings")?;
    let model = OpenAiChat::new(HttpOptions {
        base_url: settings
            .llm
            .base_url
            .clone()
            .unwrap_or_else(|| "https://api.openai.com/v1".into()),
        api_key: settings
            .llm
            .api_key
            .as_ref()
            .map(|key| key.expose_secret().to_string()),
        request_timeout: Duration::from_secs(worker_settings.request_timeout_secs),
        max_retries: worker_settings.max_retries,
        initial_backoff: Duration::from_millis(worker_settings.retry_base_ms),
        max_backoff: Duration::from_secs(30),
    })
    .context("building the model client")?;
    let wakes = ControlWakes::new();
    let handler = AgentHandler {
        pool: pool.clone(),
        model: Arc::new(model),
        registry: Registry::new(&worker_settings.tool_policy),
        mcp: McpServers::new(&worker_settings.mcp_servers),
        tools: ToolContext {
            pool: pool.clone(),
            embedding: settings.embedding.clone(),
            embedder: Default::default(),
        },
        settings: worker_settings.clone(),
        wakes: wakes.clone(),
        shutdown: shutdown.clone(),
    };
    // Only agent runs: a clock tick here is misrouted (poison).
    let handlers = Handlers::new().with(Arc::new(handler));
    let options = WorkerOptions {
        concurrency: worker_settings.concurrency,
        receive_wait: Duration::from_secs(u64::from(worker_settings.receive_wait_secs)),
        lease: worker_settings.lease(),
        shutdown_deadline: Duration::from_secs(worker_settings.shutdown_deadline_secs),
        retry: settings.retry.clone(),
    };
    // Metrics and retention outlive the drain, so the last steps' outcomes are scraped.
    let background = CancellationToken::new();
    let metrics_address = shared::metrics::serve(&settings.metrics.listen, background.clone())
        .await
        .context("binding the metrics listener")?;
    let listener = tokio::spawn(wakes.listen(pool.clone(), background.clone()));
    let retention = tokio::spawn(retention::run(
        pool,
        Duration::from_secs(u64::from(worker_settings.checkpoint_retention_days) * 24 * 3600),
        Duration::from_secs(3600),
        background.clone(),
    ));
    tracing::info!(%metrics_address, queue = %queue.name, "worker-agent ready");
    run_worker(queue, handlers, options, shutdown).await;
    background.cancel();
    let _ = retention.await;
    let _ = listener.await;
    Ok(())
}
