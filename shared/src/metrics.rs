//! Prometheus metrics: the recorder, the `/metrics` and `/health` routes, and the
//! names every binary shares. Each metric is documented in `docs/metrics.md`.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

pub const JOBS_STARTED: &str = "glassbox_jobs_started_total";
pub const JOBS_FINISHED: &str = "glassbox_jobs_total";
pub const STAGE_SECONDS: &str = "glassbox_stage_seconds";
pub const QUEUE_WAIT_SECONDS: &str = "glassbox_queue_wait_seconds";
pub const HEARTBEATS: &str = "glassbox_heartbeat_extensions_total";
pub const POISON_MESSAGES: &str = "glassbox_poison_messages_total";
pub const DUPLICATE_MESSAGES: &str = "glassbox_duplicate_messages_total";
pub const ACK_BATCH_SIZE: &str = "glassbox_ack_batch_size";
pub const OUTBOX_RELAYED: &str = "glassbox_outbox_relayed_total";
pub const WEBHOOK_ATTEMPTS: &str = "glassbox_webhook_attempts_total";
pub const HTTP_REQUESTS: &str = "glassbox_http_requests_total";
pub const LLM_TOKENS: &str = "glassbox_llm_tokens_total";
pub const LLM_COST_MICRODOLLARS: &str = "glassbox_llm_cost_microdollars_total";
pub const QUEUE_MESSAGES: &str = "glassbox_queue_messages";
pub const QUEUE_OLDEST_AGE_SECONDS: &str = "glassbox_queue_oldest_job_age_seconds";
pub const DLQ_MESSAGES: &str = "glassbox_dlq_messages";
pub const DLQ_REDRIVEN: &str = "glassbox_dlq_redriven_total";
pub const DLQ_DISCARDED: &str = "glassbox_dlq_discarded_total";
pub const STUCK_REQUEUED: &str = "glassbox_stuck_requeued_total";
pub const SCHEDULE_FIRES: &str = "glassbox_schedule_fires_total";
pub const SCHEDULE_FILES: &str = "glassbox_schedule_files_total";
pub const SCHEDULER_LEADER: &str = "glassbox_scheduler_leader";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                300.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // In tests several apps share a process; the first recorder wins.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `/metrics` and `/health`, for workers (api-lite mounts `/metrics` on its own router).
pub fn router() -> Router {
    let handle = handle();
    Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/health", get(|| std::future::ready("ok")))
}

/// Serves [`router`] until `shutdown` fires.
pub async fn serve(listen: &str, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    Ok(address)
}
