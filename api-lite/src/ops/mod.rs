//! The fleet-wide ops routes (`/v1/ops/...`, ops role required) and the `/ops`
//! dashboard page. The contract is documented in `docs/ops-api.md`.
//!
//! # Layout
//! - [`queues`]: depth of each queue and its DLQ; the queue gauges.
//! - [`dlq`]: browse, redrive (a background task with progress) and discard dead messages.
//! - [`stuck`]: jobs with an expired lease or queued too long; re-enqueue them.
//! - [`views`]: recent failures by error class; running and waiting executions.
//! - [`schedules`]: manage reprocessing schedules and run them now.
//! - [`webhooks`]: failed webhook deliveries; redeliver them.
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
/// Failed webhook deliveries and redelivery.
pub mod webhooks;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use shared::queue::{JobKind, Queue};

use crate::error::ApiError;
use crate::state::AppState;

/// The dashboard: one self-contained page that calls the routes below with an ops token.
const PAGE: &str = include_str!("../ops_page.html");

/// The ops routes and the dashboard page (see [`crate::routes::table`]).
pub fn table() -> Vec<crate::routes::Route> {
    vec![
        ("/ops", get(page)),
        ("/v1/ops/queues", get(queues::overview)),
        ("/v1/ops/dlq/{queue}", get(dlq::list)),
        ("/v1/ops/dlq/{queue}/messages/{message_id}", get(dlq::show)),
        ("/v1/ops/dlq/{queue}/redrive", post(dlq::redrive)),
        ("/v1/ops/dlq/{queue}/discard", post(dlq::discard)),
        ("/v1/ops/tasks/{id}", get(dlq::task)),
        ("/v1/ops/stuck", get(stuck::list)),
        ("/v1/ops/stuck/requeue", post(stuck::requeue)),
        ("/v1/ops/failures", get(views::failures)),
        ("/v1/ops/executions", get(views::executions)),
        ("/v1/ops/audit", get(audit::list)),
        (
            "/v1/ops/schedules",
            get(schedules::list).post(schedules::create),
        ),
        ("/v1/ops/schedules/{id}", delete(schedules::remove)),
        ("/v1/ops/schedules/{id}/run", post(schedules::run_now)),
        ("/v1/ops/webhooks/deliveries", get(webhooks::list)),
        (
            "/v1/ops/webhooks/deliveries/{id}/redeliver",
            post(webhooks::redeliver),
        ),
    ]
}

/// The ops dashboard: one self-contained page that calls the ops routes with an ops token.
#[utoipa::path(get, path = "/ops", tag = "ops", security(()),
    responses((status = 200, description = "The dashboard page", body = String, content_type = "text/html")))]
pub async fn page() -> impl IntoResponse {
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
