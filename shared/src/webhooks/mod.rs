//! Webhooks: per-org endpoints, the events they subscribe to, and durable deliveries.
//!
//! An event is written by the lifecycle modules ([`crate::files`], [`crate::executions`])
//! from their one `record` function, in the transaction of the state change it
//! announces: one `webhook_deliveries` row per subscribed endpoint, so an event exists
//! if and only if its state change committed. The [`delivery::Dispatcher`] (run by every
//! api-lite replica, `FOR UPDATE SKIP LOCKED`) sends due deliveries, signed per the
//! Standard Webhooks spec ([`signing`]), retries with exponential backoff and jitter for
//! the retry window (about a day), then marks them failed; ops can redeliver them.
//! Targets are checked against SSRF both when an endpoint is registered and at every
//! connection ([`target`]).
//!
//! The message body is `{"type": ..., "timestamp": ..., "data": {...}}`; its
//! `webhook-id` (the event id) stays the same across attempts and redeliveries, so a
//! receiver dedupes on it.
//!
//! # Layout
//! - this module: event types, fan-out, endpoint and delivery storage.
//! - [`signing`]: secrets, signatures and their verification.
//! - [`target`]: which URLs and addresses may be delivered to.
//! - [`delivery`]: the dispatcher.

/// Sending due deliveries, with retries.
pub mod delivery;
/// Standard Webhooks secrets and HMAC-SHA256 signatures.
pub mod signing;
/// SSRF checks on webhook URLs and the addresses they resolve to.
pub mod target;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The NOTIFY channel that wakes dispatchers when deliveries are written.
pub const CHANNEL: &str = "glassbox_webhooks";

/// What a webhook can announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    FileReady,
    FileFailed,
    FileDeadLettered,
    ExecutionAwaitingInput,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionCancelled,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::FileReady,
        Self::FileFailed,
        Self::FileDeadLettered,
        Self::ExecutionAwaitingInput,
        Self::ExecutionCompleted,
        Self::ExecutionFailed,
        Self::ExecutionCancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FileReady => "file.ready",
            Self::FileFailed => "file.failed",
            Self::FileDeadLettered => "file.dead_lettered",
            Self::ExecutionAwaitingInput => "execution.awaiting_input",
            Self::ExecutionCompleted => "execution.completed",
            Self::ExecutionFailed => "execution.failed",
            Self::ExecutionCancelled => "execution.cancelled",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == name)
    }

    pub fn names() -> Vec<&'static str> {
        Self::ALL.map(Self::as_str).to_vec()
    }
}

/// Writes one delivery of `event` per endpoint of `org_id` subscribed to it, in the
/// caller's transaction (the one that made the state change), and wakes the dispatchers
/// when there is any. `data` names the subject (`file_id`, `execution_id`) and its status.
pub async fn enqueue_event(
    connection: &mut PgConnection,
    org_id: Uuid,
    event: EventType,
    data: Value,
) -> sqlx::Result<u64> {
    let event_id = format!("msg_{}", Uuid::now_v7().simple());
    let payload = json!({
        "type": event.as_str(),
        "timestamp": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": data,
    });
    let inserted = sqlx::query(
        "INSERT INTO webhook_deliveries (event_id, endpoint_id, org_id, event_type, payload) \
         SELECT $1, id, org_id, $3, $4 FROM webhook_endpoints WHERE org_id = $2 AND $3 = ANY(event_types)",
    )
    .bind(&event_id)
    .bind(org_id)
    .bind(event.as_str())
    .bind(&payload)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if inserted > 0 {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *connection)
            .await?;
    }
    Ok(inserted)
}

/// A registered endpoint, without its secrets.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub event_types: Vec<String>,
    /// Until when the secret replaced by the last rotation still signs.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ENDPOINT_COLUMNS: &str =
    "id, url, event_types, previous_secret_expires_at, created_at, updated_at";

/// Registers an endpoint of `org_id`; the caller checked the URL and event types.
pub async fn create_endpoint(
    pool: &PgPool,
    org_id: Uuid,
    url: &str,
    event_types: &[&str],
    secret: &str,
) -> sqlx::Result<Endpoint> {
    let statement = format!(
        "INSERT INTO webhook_endpoints (id, org_id, url, event_types, secret) VALUES ($1, $2, $3, $4, $5) RETURNING {ENDPOINT_COLUMNS}"
    );
    sqlx::query_as(&statement)
        .bind(Uuid::now_v7())
        .bind(org_id)
        .bind(url)
        .bind(event_types)
        .bind(secret)
        .fetch_one(pool)
        .await
}

pub async fn count_endpoints(pool: &PgPool, org_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE org_id = $1")
        .bind(org_id)
        .fetch_one(pool)
        .await
}

pub async fn list_endpoints(pool: &PgPool, org_id: Uuid) -> sqlx::Result<Vec<Endpoint>> {
    let statement =
        format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 ORDER BY id");
    sqlx::query_as(&statement)
        .bind(org_id)
        .fetch_all(pool)
        .await
}

pub async fn find_endpoint(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Endpoint>> {
    let statement =
        format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND id = $2");
    sqlx::query_as(&statement)
        .bind(org_id)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Deletes the endpoint and its deliveries. False when the org has no such endpoint.
pub async fn delete_endpoint(pool: &PgPool, org_id: Uuid, id: Uuid) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Replaces the secret with `secret`; the old one keeps signing (a second signature)
/// for `grace`. None when the org has no such endpoint.
pub async fn rotate_secret(
    pool: &PgPool,
    org_id: Uuid,
    id: Uuid,
    secret: &str,
    grace: std::time::Duration,
) -> sqlx::Result<Option<Endpoint>> {
    let statement = format!(
        "UPDATE webhook_endpoints SET previous_secret = secret, secret = $3, \
         previous_secret_expires_at = now() + make_interval(secs => $4), updated_at = now() \
         WHERE org_id = $1 AND id = $2 RETURNING {ENDPOINT_COLUMNS}"
    );
    sqlx::query_as(&statement)
        .bind(org_id)
        .bind(id)
        .bind(secret)
        .bind(grace.as_secs_f64())
        .fetch_optional(pool)
        .await
}

/// A delivery of one event to one endpoint.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Delivery {
    pub id: i64,
    /// The `webhook-id` header: the same on every attempt.
    pub event_id: String,
    pub endpoint_id: Uuid,
    pub org_id: Uuid,
    pub url: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (retries ran out; ops may redeliver).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
}

const DELIVERY_COLUMNS: &str = "d.id, d.event_id, d.endpoint_id, d.org_id, e.url, d.event_type, d.status, d.attempts, \
     CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at, d.last_status_code, d.last_error, \
     d.created_at, d.delivered_at, d.failed_at";

/// The delivery statuses.
pub const DELIVERY_STATUSES: [&str; 3] = ["pending", "delivered", "failed"];

/// Deliveries, newest first: of one org's endpoint, or (ops) of every org, optionally
/// of one status.
pub async fn list_deliveries(
    pool: &PgPool,
    org_id: Option<Uuid>,
    endpoint_id: Option<Uuid>,
    status: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Delivery>> {
    let statement = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE ($1::uuid IS NULL OR d.org_id = $1) AND ($2::uuid IS NULL OR d.endpoint_id = $2) \
           AND ($3::text IS NULL OR d.status = $3) ORDER BY d.id DESC LIMIT $4"
    );
    sqlx::query_as(&statement)
        .bind(org_id)
        .bind(endpoint_id)
        .bind(status)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// What a redelivery request found.
#[derive(Debug, Clone)]
pub enum Redelivery {
    /// Back to pending with a new retry window; it goes out at once.
    Scheduled(Box<Delivery>),
    /// Delivered already, or still being retried: nothing to do.
    NotFailed(String),
    NotFound,
}

/// `failed → pending` with a fresh retry window, on an ops request, in the caller's
/// transaction (with its audit entry). The event id stays: receivers dedupe on it.
pub async fn redeliver(connection: &mut PgConnection, id: i64) -> sqlx::Result<Redelivery> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM webhook_deliveries WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *connection)
            .await?;
    match status.as_deref() {
        None => return Ok(Redelivery::NotFound),
        Some("failed") => {}
        Some(other) => return Ok(Redelivery::NotFailed(other.to_string())),
    }
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, window_started_at = now(), next_attempt_at = now(), \
         failed_at = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *connection)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *connection)
        .await?;
    let statement = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = $1"
    );
    let delivery: Delivery = sqlx::query_as(&statement)
        .bind(id)
        .fetch_one(&mut *connection)
        .await?;
    Ok(Redelivery::Scheduled(Box::new(delivery)))
}
