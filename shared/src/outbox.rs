//! The transactional outbox: a job row and its message commit together, and a relay
//! sends committed messages to SQS, so a committed job always gets enqueued.
//!
//! Several relays (one per api-lite replica) share the table with
//! `FOR UPDATE SKIP LOCKED`. A crash between send and delete re-sends a message, which
//! is fine: every handler is idempotent.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics as names;
use crate::queue::{JobKind, JobMessage, Outgoing, Queue};
use crate::telemetry::TraceCarrier;
use sqlx::types::Json;
use uuid::Uuid;

/// The NOTIFY channel that wakes relays when a message is enqueued.
const CHANNEL: &str = "glassbox_outbox";
const BATCH: i64 = 10;

pub use crate::queue::{AGENT_JOBS, FILE_JOBS};

/// Adds `message` to the outbox inside the caller's transaction, for the queue its kind
/// travels on ([`JobKind::queue`]). This is the one way a job is enqueued: the row change
/// and its message commit together or not at all.
///
/// The current span's trace context (when spans are exported) is stored with the message
/// and sent as its attributes, so the job's trace continues in the worker.
pub async fn enqueue(connection: &mut PgConnection, message: &JobMessage) -> sqlx::Result<()> {
    let trace_context = crate::telemetry::inject_current();
    sqlx::query("INSERT INTO outbox (queue, body, trace_context) VALUES ($1, $2, $3)")
        .bind(message.kind.queue())
        .bind(message.to_body())
        .bind((!trace_context.is_empty()).then_some(Json(trace_context)))
        .execute(&mut *connection)
        .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Enqueues a job of `kind` for the row `job_id` of `org_id`; see [`enqueue`].
pub async fn enqueue_job(
    connection: &mut PgConnection,
    kind: JobKind,
    job_id: Uuid,
    org_id: Uuid,
) -> sqlx::Result<()> {
    enqueue(connection, &JobMessage::new(kind, job_id, org_id)).await
}

/// Relays committed outbox entries to SQS.
pub struct OutboxRelay {
    pool: PgPool,
    queues: HashMap<String, Queue>,
    poll: Duration,
}

impl OutboxRelay {
    pub fn new(pool: PgPool, queues: HashMap<String, Queue>, poll: Duration) -> Self {
        Self { pool, queues, poll }
    }

    /// Relays until `shutdown`, woken by NOTIFY and by a poll as a fallback.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    warn!(%error, "outbox listen failed; polling only");
                    None
                }
            },
            Err(error) => {
                warn!(%error, "outbox listener failed to connect; polling only");
                None
            }
        };
        while !shutdown.is_cancelled() {
            match self.relay_pending().await {
                Ok(relayed) if relayed > 0 => debug!(relayed, "outbox relayed"),
                Ok(_) => {}
                Err(error) => warn!(%error, "outbox relay failed; retrying"),
            }
            let wake = async {
                match listener.as_mut() {
                    Some(listener) => {
                        let woken = tokio::time::timeout(self.poll, listener.recv()).await;
                        if let Ok(Err(error)) = woken {
                            // Postgres is away (a restart): wait a poll instead of
                            // spinning; the listener reconnects on its next call.
                            debug!(%error, "outbox listener lost its connection");
                            tokio::time::sleep(self.poll).await;
                        }
                    }
                    None => tokio::time::sleep(self.poll).await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                () = wake => {}
            }
        }
    }

    /// Relays everything that is due; returns how many messages went out.
    pub async fn relay_pending(&self) -> sqlx::Result<usize> {
        let mut total = 0;
        loop {
            let (sent, fetched) = self.relay_batch().await?;
            total += sent;
            if fetched < BATCH as usize {
                return Ok(total);
            }
        }
    }

    async fn relay_batch(&self) -> sqlx::Result<(usize, usize)> {
        let mut transaction = self.pool.begin().await?;
        let rows: Vec<(i64, String, String, Option<Json<TraceCarrier>>)> = sqlx::query_as(
            "SELECT id, queue, body, trace_context FROM outbox WHERE available_at <= now() ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *transaction)
        .await?;
        let fetched = rows.len();
        let mut by_queue: HashMap<&str, Vec<Outgoing>> = HashMap::new();
        for (id, queue, body, trace_context) in &rows {
            by_queue.entry(queue.as_str()).or_default().push(Outgoing {
                id: id.to_string(),
                body: body.clone(),
                trace_context: trace_context
                    .as_ref()
                    .map(|carrier| carrier.0.clone())
                    .unwrap_or_default(),
            });
        }
        let mut sent_ids: Vec<i64> = Vec::new();
        let mut failures: Vec<(i64, String)> = Vec::new();
        for (queue_name, entries) in by_queue {
            let Some(queue) = self.queues.get(queue_name) else {
                failures.extend(entries.iter().map(|entry| {
                    (
                        entry.id.parse().unwrap_or_default(),
                        format!("no queue configured for {queue_name}"),
                    )
                }));
                continue;
            };
            match queue.send_batch(&entries).await {
                Ok(accepted) => {
                    for entry in &entries {
                        let id_number: i64 = entry.id.parse().unwrap_or_default();
                        if accepted.contains(&entry.id) {
                            sent_ids.push(id_number);
                        } else {
                            failures.push((id_number, "rejected by SendMessageBatch".into()));
                        }
                    }
                }
                Err(error) => failures.extend(
                    entries
                        .iter()
                        .map(|entry| (entry.id.parse().unwrap_or_default(), error.to_string())),
                ),
            }
        }
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&sent_ids)
            .execute(&mut *transaction)
            .await?;
        for (id, error) in &failures {
            // Back off per row: 1, 2, 4 ... 60 s.
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, \
                 available_at = now() + least(interval '60 seconds', interval '1 second' * power(2, attempts)) WHERE id = $1",
            )
            .bind(id)
            .bind(error)
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        if !sent_ids.is_empty() {
            metrics::counter!(names::OUTBOX_RELAYED).increment(sent_ids.len() as u64);
        }
        if !failures.is_empty() {
            warn!(failed = failures.len(), first_error = %failures[0].1, "outbox messages not sent; will retry");
        }
        Ok((sent_ids.len(), fetched))
    }
}
