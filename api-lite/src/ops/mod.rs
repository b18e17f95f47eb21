//! The fleet-wide ops routes (`/v1/ops/...`, ops role required) and the `/ops`
//! dashboard page. The contract is documented in `docs/ops-api.md`.
//!
//! # Layout
//! - [`queues`]: depth of each queue and its DLQ; the queue gauges.
//! - [`dlq`]: browse, redrive (a background task with progress) and discard dead messages.
//! - [`stuck`]: jobs with an expired lease or queued too long; re-enqueue them.
//! - [`views`]: recent failures by error class; running and waiting executions.
//! - [`schedules`]: manage reprocessing schedules and run them now.
//! - [`audit`]: the audit log every ops action writes to.

/// The audit log.
pub mod audit;
/// Dead-letter queues.
pub mod dlq;
/// Queue overview and gauges.
pub mod queues;
/// Schedule management.
pub mod schedules;
/// Stuck jobs.
pub mod stuck;
/// Failures and executions across orgs.
pub mod views;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use shared::queue::{JobKind, Queue};

use crate::error::ApiError;
use crate::state::AppState;

/// The dashboard: one self-contained page that calls the routes below with an ops token.
const PAGE: &str = include_str!("../ops_page.html");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ops", get(page))
        .route("/v1/ops/queues", get(queues::overview))
        .route("/v1/ops/dlq/{queue}", get(dlq::list))
        .route("/v1/ops/dlq/{queue}/messages/{message_id}", get(dlq::show))
        .route("/v1/ops/dlq/{queue}/redrive", post(dlq::redrive))
        .route("/v1/ops/dlq/{queue}/discard", post(dlq::discard))
        .route("/v1/ops/tasks/{id}", get(dlq::task))
        .route("/v1/ops/stuck", get(stuck::list))
        .route("/v1/ops/stuck/requeue", post(stuck::requeue))
        .route("/v1/ops/failures", get(views::failures))
        .route("/v1/ops/executions", get(views::executions))
        .route("/v1/ops/audit", get(audit::list))
        .route(
            "/v1/ops/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route("/v1/ops/schedules/{id}", delete(schedules::remove))
        .route("/v1/ops/schedules/{id}/run", post(schedules::run_now))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

/// The logical queue names ops use, with the queue and the kind of job it carries.
pub const QUEUE_NAMES: [&str; 2] = [shared::outbox::FILE_JOBS, shared::outbox::AGENT_JOBS];

pub(crate) fn queue_named<'state>(
    state: &'state AppState,
    name: &str,
) -> Result<(&'state Queue, JobKind), ApiError> {
    match name {
        shared::outbox::FILE_JOBS => Ok((&state.file_queue, JobKind::FileProcess)),
        shared::outbox::AGENT_JOBS => Ok((&state.agent_queue, JobKind::AgentRun)),
        _ => Err(ApiError::NotFound("queue")),
    }
}
