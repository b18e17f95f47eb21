//! How deep each queue and its DLQ are, for the API, the CLI, the dashboard and the
//! Prometheus gauges.

use std::time::Duration;

use axum::extract::State;
use serde::Serialize;
use serde_json::{Value, json};
use shared::queue::JobKind;
use tokio_util::sync::CancellationToken;

use crate::auth::Operator;
use crate::error::{ApiError, Dependency};
use crate::extract::ApiJson;
use crate::ops::{QUEUE_NAMES, queue_named};
use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct QueueView {
    pub queue: &'static str,
    pub kind: &'static str,
    pub url: String,
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Age of the oldest job Postgres says is waiting for this queue.
    pub oldest_age_secs: Option<f64>,
    pub max_receive_count: u32,
    pub dlq: DlqView,
}

#[derive(Debug, Serialize)]
pub struct DlqView {
    pub name: String,
    pub url: String,
    pub visible: u64,
    pub in_flight: u64,
}

/// Reads every queue's depth (and sets the gauges on the way).
pub async fn snapshot(state: &AppState) -> Result<Vec<QueueView>, ApiError> {
    let mut views = Vec::new();
    for name in QUEUE_NAMES {
        let (queue, kind) = queue_named(state, name)?;
        let depth = queue
            .depth()
            .await
            .map_err(|error| ApiError::unavailable(Dependency::Queue, error))?;
        let oldest_age_secs = match kind {
            // Clock ticks ride on file-jobs and have no rows.
            JobKind::FileProcess | JobKind::ScheduleTick => {
                shared::files::oldest_waiting_secs(&state.pool).await?
            }
            JobKind::AgentRun => shared::executions::oldest_waiting_secs(&state.pool).await?,
        };
        let gauge = |state_label: &'static str, value: u64| {
            metrics::gauge!(shared::metrics::QUEUE_MESSAGES, "queue" => name, "state" => state_label)
                .set(value as f64);
        };
        gauge("visible", depth.visible);
        gauge("in_flight", depth.in_flight);
        gauge("delayed", depth.delayed);
        metrics::gauge!(shared::metrics::DLQ_MESSAGES, "queue" => name)
            .set(depth.dead_letter_visible as f64);
        metrics::gauge!(shared::metrics::QUEUE_OLDEST_AGE_SECONDS, "queue" => name)
            .set(oldest_age_secs.unwrap_or(0.0));
        views.push(QueueView {
            queue: name,
            kind: kind.as_str(),
            url: queue.url.clone(),
            visible: depth.visible,
            in_flight: depth.in_flight,
            delayed: depth.delayed,
            oldest_age_secs,
            max_receive_count: queue.max_receive_count,
            dlq: DlqView {
                name: queue
                    .dlq_url
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                url: queue.dlq_url.clone(),
                visible: depth.dead_letter_visible,
                in_flight: depth.dead_letter_in_flight,
            },
        });
    }
    Ok(views)
}

pub async fn overview(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(json!({ "queues": snapshot(&state).await? })))
}

/// Keeps the queue gauges fresh for Prometheus, until `shutdown`.
pub async fn refresh_gauges(state: AppState, interval: Duration, shutdown: CancellationToken) {
    loop {
        if let Err(error) = snapshot(&state).await {
            tracing::debug!(%error, "queue gauges not refreshed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
