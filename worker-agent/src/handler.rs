//! The agent job as the shared worker loop sees it: claim the execution's fenced lease,
//! run its steps ([`crate::step`]), renew the lease, record a failed attempt, release the
//! run at the shutdown deadline. Every change of the execution's status is a transition
//! of `shared::executions`.

use std::sync::Arc;

use async_trait::async_trait;
use shared::config::AgentWorkerSettings;
use shared::error::JobError;
use shared::executions;
use shared::lease::{self, LeasedTable};
use shared::queue::{JobKind, JobMessage};
use shared::worker::{Claim, Disposition, JobHandler, Receipt};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::llm::ChatModel;
use crate::mcp::McpServers;
use crate::tools::{Registry, ToolContext};
use crate::wakes::ControlWakes;

pub struct AgentHandler {
    pub pool: PgPool,
    pub model: Arc<dyn ChatModel>,
    pub registry: Registry,
    /// The MCP servers whose tools runs may call, per org.
    pub mcp: McpServers,
    pub tools: ToolContext,
    pub settings: AgentWorkerSettings,
    /// Wakes a run when its control changes (pause, cancel).
    pub wakes: Arc<ControlWakes>,
    /// The process's shutdown: a run stops at its next step boundary and is re-enqueued.
    pub shutdown: CancellationToken,
}

/// The run's lease is another worker's now (or the run was cancelled or deleted).
pub(crate) fn lease_lost() -> JobError {
    JobError::LeaseLost {
        message: "another worker owns this execution now, or it was cancelled or deleted".into(),
    }
}

/// The worker's own cancel (lost lease, shutdown deadline) cut a step short.
pub(crate) fn interrupted() -> JobError {
    JobError::transient(
        "interrupted",
        "stopped mid-step (shutdown deadline or lost lease); the step is redone",
    )
}

#[async_trait]
impl JobHandler for AgentHandler {
    fn kind(&self) -> JobKind {
        JobKind::AgentRun
    }

    async fn claim(&self, job: &JobMessage, receipt: Receipt<'_>) -> Result<Claim, JobError> {
        Ok(executions::claim(
            &self.pool,
            job.job_id,
            job.org_id,
            self.settings.lease(),
            receipt,
        )
        .await?)
    }

    async fn run(
        &self,
        job: &JobMessage,
        lease: Uuid,
        attempt: u32,
        cancel: CancellationToken,
    ) -> Result<(), JobError> {
        tracing::debug!(attempt, execution_id = %job.job_id, "running execution");
        self.drive(job, lease, &cancel).await
    }

    async fn renew(&self, job: &JobMessage, lease: Uuid) -> Result<bool, JobError> {
        Ok(lease::renew(
            &self.pool,
            LeasedTable::Executions,
            job.job_id,
            lease,
            self.settings.lease(),
        )
        .await?)
    }

    async fn record_failure(
        &self,
        job: &JobMessage,
        lease: Uuid,
        error: &JobError,
        disposition: Disposition,
    ) -> Result<(), JobError> {
        executions::record_failure(&self.pool, job.job_id, lease, error, disposition).await?;
        Ok(())
    }

    async fn release(&self, job: &JobMessage, lease: Uuid) -> Result<(), JobError> {
        executions::release(&self.pool, job.job_id, lease).await?;
        Ok(())
    }
}
