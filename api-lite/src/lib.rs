//! api-lite: the fleet's front door.
//!
//! # Layout
//! - [`routes`]: the HTTP routes, one module per resource.
//! - [`auth`]: bearer JWT verification and minting; the caller's org scopes every query.
//! - [`limits`]: the per-org rate limit, and the concurrency and timeout layers.
//! - [`live`]: LISTEN/NOTIFY wake-ups and the caps of live event streams.
//! - [`error`]: [`error::ApiError`], the one error shape of the API.
//! - [`extract`]: request extractors that reject in that shape.
//! - [`state`]: what handlers can reach (pool, AWS clients, queues, embedders, limits).
//! - [`sweeper`]: re-enqueues accepted work that never started; removes abandoned uploads.
//! - [`ops`]: the fleet-wide ops routes and the `/ops` dashboard page.
//! - [`scheduler`]: the schedule leader (advisory lock); fires are `shared::schedules`.
//! - [`openapi`]: the OpenAPI 3.1 document generated from the handlers, and `/docs`.
//!
//! [`run`] wires them together: migrations (and `shared::online_migrations` in the
//! background), queues, the outbox relay, the webhook dispatcher, the sweeper, the live
//! events listener, `/metrics` on its own listener and the HTTP server, until the
//! shutdown token fires.

/// Bearer JWT auth.
pub mod auth;
/// The API's error type.
pub mod error;
/// Extractors with API-shaped rejections.
pub mod extract;
/// Per-org rate limits, concurrency and timeout layers.
pub mod limits;
/// Live event stream wake-ups (LISTEN/NOTIFY) and caps.
pub mod live;
/// The OpenAPI document (`/openapi.json`) and the reference page (`/docs`).
pub mod openapi;
/// The ops routes and the `/ops` dashboard: queues, DLQs, stuck jobs, schedules, audit.
pub mod ops;
/// HTTP routes.
pub mod routes;
/// The schedule leader (advisory lock) of the api-lite replicas.
pub mod scheduler;
/// Shared handler state.
pub mod state;
/// Re-enqueues stalled work and removes abandoned uploads.
pub mod sweeper;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderName, Request};
use shared::aws::AwsClients;
use shared::config::Settings;
use shared::outbox::{self, OutboxRelay};
use shared::queue::Queue;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::auth::Keys;
use crate::limits::OrgRateLimiter;
use crate::live::LiveEvents;
use crate::state::{AppState, Inner};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Starts everything and serves `listener` until `shutdown` fires; `/metrics` and
/// `/health` are served on `settings.metrics.listen`.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics_listener = TcpListener::bind(&settings.metrics.listen)
        .await
        .with_context(|| format!("binding the metrics listener {}", settings.metrics.listen))?;
    run_with_metrics(listener, metrics_listener, settings, shutdown).await
}

/// [`run`] with the metrics listener already bound (tests bind port 0).
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: TcpListener,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = build_state(settings).await?;
    let background = CancellationToken::new();
    let relay = OutboxRelay::new(
        state.pool.clone(),
        queue_map(&state),
        Duration::from_millis(state.settings.api.outbox_poll_ms),
    );
    let relay_task = tokio::spawn(relay.run(background.clone()));
    // Backfills and concurrent index builds (see shared::online_migrations): in the
    // background, so a large backfill never delays readiness; search works meanwhile.
    let online_pool = state.pool.clone();
    let online_shutdown = background.clone();
    let online_task = tokio::spawn(async move {
        tokio::select! {
            outcome = shared::online_migrations::run(&online_pool) => {
                if let Err(error) = outcome {
                    tracing::error!(error = %error, "online migrations failed; the next start tries again");
                }
            }
            // An index build cut short is left invalid and rebuilt by the next run.
            () = online_shutdown.cancelled() => {}
        }
    });
    let sweeper_task = tokio::spawn(sweeper::run(
        sweeper::Sweeper {
            pool: state.pool.clone(),
            s3: state.aws.s3.clone(),
            bucket: state.settings.storage.bucket.clone(),
            requeue_after: Duration::from_secs(state.settings.api.sweeper_requeue_after_secs),
            abandoned_upload_after: Duration::from_secs(
                state.settings.storage.presign_expiry_secs
                    + state.settings.api.abandoned_upload_grace_secs,
            ),
        },
        Duration::from_secs(state.settings.api.sweeper_interval_secs),
        background.clone(),
    ));
    let gauges_task = tokio::spawn(ops::queues::refresh_gauges(
        state.clone(),
        Duration::from_secs(state.settings.api.queue_metrics_interval_secs.max(1)),
        background.clone(),
    ));
    let webhooks_task = tokio::spawn(
        shared::webhooks::delivery::Dispatcher::new(state.pool.clone(), &state.settings.webhooks)
            .context("building the webhook client")?
            .run(background.clone()),
    );
    let live_task = tokio::spawn(
        state
            .live
            .clone()
            .listen(state.pool.clone(), background.clone()),
    );
    let scheduler_task = state.settings.api.scheduler_enabled.then(|| {
        let scheduler = scheduler::Scheduler {
            pool: state.pool.clone(),
            instance: replica_name(),
            tick: Duration::from_millis(state.settings.api.scheduler_tick_ms.max(50)),
            context: ops::schedules::action_context(&state),
        };
        tokio::spawn(scheduler.run(background.clone()))
    });
    let metrics_address = metrics_listener.local_addr()?;
    let metrics_shutdown = background.clone();
    let metrics_task = tokio::spawn(async move {
        axum::serve(metrics_listener, shared::metrics::router())
            .with_graceful_shutdown(metrics_shutdown.cancelled_owned())
            .await
    });
    tracing::info!(address = %listener.local_addr()?, %metrics_address, "api-lite listening");
    let live = state.live.clone();
    let stopping = async move {
        shutdown.cancelled().await;
        // Live streams would hold the graceful shutdown open until they end on their own.
        live.close_streams();
    };
    axum::serve(listener, app(state))
        .with_graceful_shutdown(stopping)
        .await
        .context("http server failed")?;
    background.cancel();
    let _ = tokio::join!(
        relay_task,
        sweeper_task,
        gauges_task,
        live_task,
        metrics_task,
        webhooks_task,
        online_task
    );
    if let Some(scheduler_task) = scheduler_task {
        let _ = scheduler_task.await;
    }
    tracing::info!("api-lite stopped");
    Ok(())
}

/// Names this replica in the schedule fires it makes: the host (a container or task id
/// on ECS) and a random suffix.
fn replica_name() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "api-lite".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn queue_map(state: &AppState) -> HashMap<String, Queue> {
    HashMap::from([
        (outbox::FILE_JOBS.to_string(), state.file_queue.clone()),
        (outbox::AGENT_JOBS.to_string(), state.agent_queue.clone()),
    ])
}

pub async fn build_state(settings: Settings) -> anyhow::Result<AppState> {
    let keys = Keys::new(&settings.auth)?;
    // The API clamps budgets and checks models with the agent workers' settings.
    settings.agent_worker.validate()?;
    let pool = shared::db::connect(&settings.database).await?;
    shared::db::migrate(&pool).await?;
    let aws = AwsClients::new(&settings.aws).await;
    if settings.storage.create_bucket {
        ensure_bucket(&aws, &settings.storage.bucket).await?;
    }
    let file_queue =
        Queue::from_settings(&aws.sqs, &settings.queues.file_jobs, &settings.queues).await?;
    let agent_queue =
        Queue::from_settings(&aws.sqs, &settings.queues.agent_jobs, &settings.queues).await?;
    let embedder = shared::embedders::from_settings(&settings.embedding)
        .await
        .context("loading the embedding model")?;
    let mut embedders = vec![embedder];
    // During a model switch search also embeds queries with the previous model, so files
    // not yet re-embedded stay searchable.
    if let Some(previous) = &settings.embedding.previous {
        let previous = shared::embedders::from_settings(previous)
            .await
            .context("loading the previous embedding model")?;
        if previous.model_id() != embedders[0].model_id() {
            embedders.push(previous);
        }
    }
    let rate_limiter = OrgRateLimiter::new(
        settings.api.rate_limit_per_sec,
        settings.api.rate_limit_burst,
    );
    let live = LiveEvents::new(
        settings.api.max_event_streams,
        settings.api.max_event_streams_per_org,
    );
    Ok(AppState::new(Inner {
        pool,
        aws,
        settings,
        file_queue,
        agent_queue,
        keys,
        embedders,
        rate_limiter,
        live,
        ready_cache: Default::default(),
    }))
}

async fn ensure_bucket(aws: &AwsClients, bucket: &str) -> anyhow::Result<()> {
    if aws.s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    aws.s3
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .with_context(|| format!("creating bucket {bucket}"))?;
    Ok(())
}

/// The router with its layers, innermost first: the concurrency limit and timeout
/// ([`limits::guard`]), the per-org rate limit (which also verifies the token), request
/// ids (set, propagated and in every log line) and tracing. `/metrics` is not here: it
/// has its own listener.
pub fn app(state: AppState) -> Router {
    let guarded = limits::guard(routes::router(), &state.settings.api);
    guarded
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::per_org,
        ))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
            let request_id = request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or("-");
            let span = tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id, org_id = tracing::field::Empty);
            // A caller's own trace (a W3C `traceparent` header) continues through the request.
            shared::telemetry::set_parent(&span, &trace_headers(request.headers()));
            span
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// The W3C trace-context headers of a request.
fn trace_headers(headers: &axum::http::HeaderMap) -> shared::telemetry::TraceCarrier {
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}
