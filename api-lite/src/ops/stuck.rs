//! Stuck jobs: running with an expired lease, or queued for too long. Ops can put them
//! back on their queue (the sweeper does the same on its own, later).

use std::time::Duration;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::lease::Stalled;
use shared::queue::JobKind;
use shared::{executions, files};
use uuid::Uuid;

use crate::auth::Operator;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::ops::audit;
use crate::state::AppState;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StuckJob {
    pub kind: String,
    pub id: Uuid,
    pub org_id: Uuid,
    pub status: String,
    /// `lease_expired` or `queued_too_long`.
    pub reason: String,
    pub since: Option<DateTime<Utc>>,
    pub attempts: i32,
}

const STUCK_LIMIT: i64 = 500;

/// Files and executions waiting on their queue for more than `queued_for_secs`, and
/// those whose lease ran out, longest-stuck first.
async fn find(pool: &sqlx::PgPool, queued_for_secs: u64) -> sqlx::Result<Vec<StuckJob>> {
    let waited = Duration::from_secs(queued_for_secs);
    let mut jobs: Vec<StuckJob> = files::stuck(pool, waited, STUCK_LIMIT)
        .await?
        .into_iter()
        .map(|file| StuckJob {
            kind: JobKind::FileProcess.as_str().to_string(),
            id: file.id,
            org_id: file.org_id,
            status: file.status,
            reason: file.reason,
            since: file.since,
            attempts: file.attempts,
        })
        .collect();
    jobs.extend(
        executions::stuck(pool, waited, STUCK_LIMIT)
            .await?
            .into_iter()
            .map(|execution| StuckJob {
                kind: JobKind::AgentRun.as_str().to_string(),
                id: execution.id,
                org_id: execution.org_id,
                status: execution.status,
                reason: execution.reason,
                since: execution.since,
                attempts: execution.attempts,
            }),
    );
    // Oldest first, unknown times first (as Postgres sorts NULLS FIRST).
    jobs.sort_by_key(|job| job.since);
    jobs.truncate(STUCK_LIMIT as usize);
    Ok(jobs)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StuckQuery {
    pub queued_for_secs: Option<u64>,
}

pub async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(query): ApiQuery<StuckQuery>,
) -> Result<ApiJson<Value>, ApiError> {
    let threshold = query
        .queued_for_secs
        .unwrap_or(state.settings.api.stuck_queued_for_secs);
    Ok(ApiJson(
        json!({ "jobs": find(&state.pool, threshold).await? }),
    ))
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    pub kind: String,
    pub id: Uuid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueBody {
    #[serde(default)]
    pub jobs: Vec<JobRef>,
    #[serde(default)]
    pub all: bool,
    pub queued_for_secs: Option<u64>,
}

fn kind_named(name: &str) -> Result<JobKind, ApiError> {
    match JobKind::from_name(name) {
        Some(kind @ (JobKind::FileProcess | JobKind::AgentRun)) => Ok(kind),
        _ => Err(ApiError::invalid(format!(
            "unknown job kind {name:?}; use file.process or agent.run"
        ))),
    }
}

pub async fn requeue(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(body): ApiJson<RequeueBody>,
) -> Result<ApiJson<Value>, ApiError> {
    if body.all != body.jobs.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_selector",
            "name either jobs or all",
        ));
    }
    let mut targets: Vec<(JobKind, Uuid)> = Vec::new();
    if body.all {
        let threshold = body
            .queued_for_secs
            .unwrap_or(state.settings.api.stuck_queued_for_secs);
        for job in find(&state.pool, threshold).await? {
            targets.push((kind_named(&job.kind)?, job.id));
        }
    } else {
        for job in &body.jobs {
            targets.push((kind_named(&job.kind)?, job.id));
        }
    }
    let mut transaction = state.pool.begin().await?;
    let mut requeued = 0i64;
    let mut dead_lettered = 0i64;
    let by = format!("ops:{}", operator.subject);
    for (kind, id) in &targets {
        // Only stalled work: a finished, parked or healthy job is left alone.
        let stalled = match kind {
            JobKind::FileProcess => files::requeue_stalled(&mut transaction, *id, &by).await?,
            JobKind::AgentRun => executions::requeue_stalled(&mut transaction, *id, &by).await?,
            JobKind::ScheduleTick => continue,
        };
        match stalled {
            Stalled::Requeued => requeued += 1,
            Stalled::DeadLettered => dead_lettered += 1,
            Stalled::NotStalled => {}
        }
    }
    audit::record(
        &mut transaction,
        &operator.subject,
        "stuck.requeue",
        "jobs",
        requeued,
        json!({ "all": body.all, "jobs": body.jobs, "dead_lettered": dead_lettered }),
    )
    .await?;
    transaction.commit().await?;
    metrics::counter!(shared::metrics::STUCK_REQUEUED).increment(requeued as u64);
    Ok(ApiJson(
        json!({ "requeued": requeued, "dead_lettered": dead_lettered }),
    ))
}
