//! Stuck jobs: running with an expired lease, or queued for too long. Ops can put them
//! back on their queue (the sweeper does the same on its own, later).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::queue::JobKind;
use uuid::Uuid;

use crate::auth::Operator;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::ops::audit;
use crate::state::AppState;
use shared::jobs;

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

async fn find(pool: &sqlx::PgPool, queued_for_secs: u64) -> sqlx::Result<Vec<StuckJob>> {
    sqlx::query_as(
        "SELECT 'file.process' AS kind, id, org_id, status, \
                CASE WHEN status = 'queued' THEN 'queued_too_long' ELSE 'lease_expired' END AS reason, \
                CASE WHEN status = 'queued' THEN queued_at ELSE lease_expires_at END AS since, attempts \
         FROM files WHERE (status = 'queued' AND queued_at < now() - make_interval(secs => $1)) \
                       OR (status = 'processing' AND lease_expires_at < now()) \
         UNION ALL \
         SELECT 'agent.run', id, org_id, status, \
                CASE WHEN status = 'queued' THEN 'queued_too_long' ELSE 'lease_expired' END, \
                CASE WHEN status = 'queued' THEN queued_at ELSE lease_expires_at END, attempts \
         FROM executions WHERE (status = 'queued' AND queued_at < now() - make_interval(secs => $1)) \
                            OR (status = 'running' AND lease_expires_at < now()) \
         ORDER BY since NULLS FIRST LIMIT $2",
    )
    .bind(queued_for_secs as f64)
    .bind(STUCK_LIMIT)
    .fetch_all(pool)
    .await
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
    match name {
        "file.process" => Ok(JobKind::FileProcess),
        "agent.run" => Ok(JobKind::AgentRun),
        other => Err(ApiError::invalid(format!(
            "unknown job kind {other:?}; use file.process or agent.run"
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
    for (kind, id) in &targets {
        // Only unfinished work: a finished job has nothing to resume.
        let statement = match kind {
            JobKind::FileProcess => {
                "SELECT org_id FROM files WHERE id = $1 AND status IN ('queued', 'processing', 'retrying') FOR UPDATE"
            }
            JobKind::AgentRun => {
                "SELECT org_id FROM executions WHERE id = $1 AND status IN ('queued', 'running') FOR UPDATE"
            }
            JobKind::ScheduleTick => continue,
        };
        let org_id: Option<Uuid> = sqlx::query_scalar(statement)
            .bind(id)
            .fetch_optional(&mut *transaction)
            .await?;
        if let Some(org_id) = org_id {
            jobs::requeue_stalled(&mut transaction, *kind, *id, org_id).await?;
            requeued += 1;
        }
    }
    audit::record(
        &mut transaction,
        &operator.subject,
        "stuck.requeue",
        "jobs",
        requeued,
        json!({ "all": body.all, "jobs": body.jobs }),
    )
    .await?;
    transaction.commit().await?;
    metrics::counter!(shared::metrics::STUCK_REQUEUED).increment(requeued as u64);
    Ok(ApiJson(json!({ "requeued": requeued })))
}
