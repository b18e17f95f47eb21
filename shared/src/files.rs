//! The file lifecycle: every status a file can have and every transition between them,
//! each with its event row (`file_events`) and, when it puts the file on the queue, its
//! outbox entry, in the caller's transaction.
//!
//! | transition | from | to | new message |
//! |---|---|---|---|
//! | [`create`] | | `awaiting_upload` | |
//! | [`queue_uploaded`] | `awaiting_upload` | `queued` | yes |
//! | [`claim`] | `queued`, `retrying`, `dead_lettered`, `processing` (lease run out) | `processing` | |
//! | [`mark_ready`] | `processing` | `ready` | |
//! | [`record_failure`] | `processing` | `failed`, `retrying`, `dead_lettered` | |
//! | [`release`] | `processing` | `queued` | its own, made visible |
//! | [`requeue_stalled`] | `queued`, `retrying`, `processing` (lease run out) | `queued`; `dead_lettered` after a lost last attempt | yes; none |
//! | [`reprocess`] | `ready`, `failed`, `dead_lettered` | `queued` | yes |
//! | [`reopen_dead_lettered`] | `dead_lettered` | `queued` | the one moved back |
//!
//! Routes, the worker, the sweeper, ops and the schedules call these functions and write
//! no status SQL of their own. Every transition goes through one private function,
//! `record`, which writes the event row, the outbox entry and the webhook deliveries
//! (`file.ready`, `file.failed`, `file.dead_lettered`) in the same transaction.
//!
//! `queued_at` is when the file (re-)entered the queue: for a `retrying` file, when its
//! backoff ends and its message shows again. The sweeper re-enqueues a file that has
//! waited on the queue for longer than its threshold since then (its message was lost),
//! and one whose worker's lease ran out, unless that worker was on the message's last
//! allowed receive: SQS has dead-lettered that message, so the file is `dead_lettered`.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::JobError;
use crate::lease::{self, Claim, LAST_ATTEMPT_LOST, LeasedTable, Receipt, Stalled};
use crate::outbox;
use crate::queue::JobKind;
use crate::webhooks::{self, EventType};
use crate::worker::Disposition;

/// A file's status; mirrors the CHECK list of `files.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileStatus {
    AwaitingUpload,
    Queued,
    Processing,
    Retrying,
    Ready,
    Failed,
    DeadLettered,
}

impl FileStatus {
    pub const ALL: [FileStatus; 7] = [
        Self::AwaitingUpload,
        Self::Queued,
        Self::Processing,
        Self::Retrying,
        Self::Ready,
        Self::Failed,
        Self::DeadLettered,
    ];
    /// Finished one way or another: a file in these may be processed again.
    pub const REPROCESSABLE: [FileStatus; 3] = [Self::Ready, Self::Failed, Self::DeadLettered];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingUpload => "awaiting_upload",
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Retrying => "retrying",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::DeadLettered => "dead_lettered",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == name)
    }

    /// Every status name, as the API lists them.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.map(Self::as_str).to_vec()
    }

    fn names_of(statuses: &[FileStatus]) -> Vec<&'static str> {
        statuses.iter().map(|status| status.as_str()).collect()
    }
}

/// What happened to a file; the `kind` of its event row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Registered, waiting for the upload.
    Created,
    /// The upload was confirmed; the file is on the queue.
    Queued,
    /// A worker took it.
    Claimed,
    /// Stored and searchable.
    Ready,
    /// A permanent error.
    Failed,
    /// A transient error; the message comes back after a backoff.
    Retrying,
    /// SQS gave up on it (the last allowed receive failed, or ended with no outcome).
    DeadLettered,
    /// A worker gave it back unfinished (shutdown).
    Released,
    /// Put back on the queue by the sweeper or ops: its message was lost or its worker died.
    Requeued,
    /// Processed again on request (API or schedule).
    Reprocessed,
    /// Reopened by an ops redrive of its dead-lettered message.
    Redriven,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Queued => "queued",
            Self::Claimed => "claimed",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
            Self::DeadLettered => "dead_lettered",
            Self::Released => "released",
            Self::Requeued => "requeued",
            Self::Reprocessed => "reprocessed",
            Self::Redriven => "redriven",
        }
    }

    /// Whether the transition puts a new message on the queue (through the outbox).
    fn enqueues(self) -> bool {
        matches!(self, Self::Queued | Self::Requeued | Self::Reprocessed)
    }

    /// The webhook event the transition announces, if any.
    fn webhook(self) -> Option<EventType> {
        match self {
            Self::Ready => Some(EventType::FileReady),
            Self::Failed => Some(EventType::FileFailed),
            Self::DeadLettered => Some(EventType::FileDeadLettered),
            _ => None,
        }
    }
}

/// Writes the transition's event row, its outbox entry when it enqueues, and its webhook
/// deliveries when it announces one, in the transaction that changed the row. Every
/// transition passes through here.
async fn record(
    connection: &mut PgConnection,
    file_id: Uuid,
    org_id: Uuid,
    transition: Transition,
    data: Value,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO file_events (file_id, org_id, kind, data) VALUES ($1, $2, $3, $4)")
        .bind(file_id)
        .bind(org_id)
        .bind(transition.as_str())
        .bind(&data)
        .execute(&mut *connection)
        .await?;
    if transition.enqueues() {
        outbox::enqueue_job(connection, JobKind::FileProcess, file_id, org_id).await?;
    }
    if let Some(event) = transition.webhook() {
        let mut payload = json!({ "file_id": file_id, "status": transition.as_str() });
        if let (Some(fields), Value::Object(extra)) = (payload.as_object_mut(), data) {
            for (key, value) in extra {
                fields.entry(key).or_insert(value);
            }
        }
        webhooks::enqueue_event(connection, org_id, event, payload).await?;
    }
    Ok(())
}

/// A file as `POST /v1/files` registers it.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: &'a str,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub object_key: &'a str,
    /// The user's metadata, a JSON object (checked by the caller: `shared::metadata`).
    pub metadata: &'a Value,
}

/// Registers a file awaiting its upload.
pub async fn create(connection: &mut PgConnection, file: &NewFile<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO files (id, org_id, name, content_type, size_bytes, object_key, status, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(file.id)
    .bind(file.org_id)
    .bind(file.name)
    .bind(file.content_type)
    .bind(file.size_bytes)
    .bind(file.object_key)
    .bind(FileStatus::AwaitingUpload.as_str())
    .bind(file.metadata)
    .execute(&mut *connection)
    .await?;
    record(
        connection,
        file.id,
        file.org_id,
        Transition::Created,
        json!({}),
    )
    .await
}

/// `awaiting_upload → queued`, once the upload is confirmed. False when the file is not
/// awaiting its upload (confirmed already, or not the org's).
pub async fn queue_uploaded(
    connection: &mut PgConnection,
    file_id: Uuid,
    org_id: Uuid,
) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE files SET status = $3, queued_at = now(), updated_at = now() WHERE id = $1 AND org_id = $2 AND status = $4",
    )
    .bind(file_id)
    .bind(org_id)
    .bind(FileStatus::Queued.as_str())
    .bind(FileStatus::AwaitingUpload.as_str())
    .execute(&mut *connection)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    record(connection, file_id, org_id, Transition::Queued, json!({})).await?;
    Ok(true)
}

/// `queued | retrying | dead_lettered | processing (lease run out) → processing` under a
/// new lease. A dead-lettered file is taken too: its message was moved back to the queue
/// (by any tool, SQS console included). The lease records the message it was taken with,
/// and whether that was the message's last allowed receive (see the module docs).
pub async fn claim(
    pool: &PgPool,
    file_id: Uuid,
    org_id: Uuid,
    lease_length: Duration,
    receipt: Receipt<'_>,
) -> sqlx::Result<Claim> {
    let lease = Uuid::new_v4();
    let mut transaction = pool.begin().await?;
    let claimed: Option<(i32, String)> = sqlx::query_as(
        "WITH previous AS (SELECT id, status FROM files WHERE id = $1 AND org_id = $2 FOR UPDATE) \
         UPDATE files SET status = $5, stage = 'download', lease_token = $3, \
                lease_expires_at = now() + make_interval(secs => $4), last_receive = $6, lease_message_id = $8, attempts = attempts + 1, \
                started_at = now(), finished_at = NULL, stage_durations_ms = '{}'::jsonb, updated_at = now() \
         FROM previous WHERE files.id = previous.id \
           AND (previous.status = ANY($7) OR (previous.status = $5 AND (files.lease_expires_at IS NULL OR files.lease_expires_at < now()))) \
         RETURNING files.attempts, previous.status",
    )
    .bind(file_id)
    .bind(org_id)
    .bind(lease)
    .bind(lease_length.as_secs_f64())
    .bind(FileStatus::Processing.as_str())
    .bind(receipt.last_receive)
    .bind(FileStatus::names_of(&[
        FileStatus::Queued,
        FileStatus::Retrying,
        FileStatus::DeadLettered,
    ]))
    .bind(receipt.message_id)
    .fetch_optional(&mut *transaction)
    .await?;
    let Some((attempt, previous_status)) = claimed else {
        transaction.rollback().await?;
        return lease::claim_not_taken(pool, LeasedTable::Files, file_id, org_id, receipt).await;
    };
    record(
        &mut transaction,
        file_id,
        org_id,
        Transition::Claimed,
        json!({ "attempt": attempt, "from": previous_status, "last_receive": receipt.last_receive }),
    )
    .await?;
    transaction.commit().await?;
    Ok(Claim::Acquired {
        lease,
        attempt: attempt as u32,
    })
}

/// Moves a claimed file to `stage` with the timings so far (not a status change). False
/// when the lease is no longer this worker's.
pub async fn enter_stage(
    pool: &PgPool,
    file_id: Uuid,
    lease: Uuid,
    stage: &str,
    stage_durations_ms: &Value,
) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE files SET stage = $3, stage_durations_ms = $4, updated_at = now() WHERE id = $1 AND lease_token = $2",
    )
    .bind(file_id)
    .bind(lease)
    .bind(stage)
    .bind(stage_durations_ms)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// What the worker learned about a stored file.
#[derive(Debug, Clone)]
pub struct Stored<'a> {
    pub detected_type: &'a str,
    pub pages: i32,
    pub chunk_count: i32,
    pub embedding_model: &'a str,
    pub extractor_version: i32,
    pub content_sha256: &'a str,
    pub stage_durations_ms: Value,
    /// The extraction engine that read the file (`pdfium`, `pdf-extract`, `docx`, ...).
    pub extraction_engine: &'a str,
}

/// Locks the file for the store transaction if the lease is still `lease`.
pub async fn fence(
    connection: &mut PgConnection,
    file_id: Uuid,
    lease: Uuid,
) -> sqlx::Result<bool> {
    lease::fence(connection, LeasedTable::Files, file_id, lease).await
}

/// `processing → ready`, in the transaction that stored the chunks (after [`fence`]).
/// False when the lease is no longer this worker's.
pub async fn mark_ready(
    connection: &mut PgConnection,
    file_id: Uuid,
    lease: Uuid,
    stored: &Stored<'_>,
) -> sqlx::Result<bool> {
    let org_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE files SET status = $3, stage = NULL, error_class = NULL, error_code = NULL, error_message = NULL, \
         detected_type = $4, pages = $5, chunk_count = $6, embedding_model = $7, extractor_version = $8, content_sha256 = $9, \
         stage_durations_ms = $10, extraction_engine = $11, lease_token = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now() \
         WHERE id = $1 AND lease_token = $2 RETURNING org_id",
    )
    .bind(file_id)
    .bind(lease)
    .bind(FileStatus::Ready.as_str())
    .bind(stored.detected_type)
    .bind(stored.pages)
    .bind(stored.chunk_count)
    .bind(stored.embedding_model)
    .bind(stored.extractor_version)
    .bind(stored.content_sha256)
    .bind(&stored.stage_durations_ms)
    .bind(stored.extraction_engine)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(org_id) = org_id else {
        return Ok(false);
    };
    record(
        connection,
        file_id,
        org_id,
        Transition::Ready,
        json!({ "chunks": stored.chunk_count, "model": stored.embedding_model }),
    )
    .await?;
    Ok(true)
}

/// `processing → failed | retrying | dead_lettered` after a failed attempt, fenced by the
/// lease. A retrying file's `queued_at` is when its backoff ends. False when the lease is
/// no longer this worker's.
pub async fn record_failure(
    pool: &PgPool,
    file_id: Uuid,
    lease: Uuid,
    error: &JobError,
    disposition: Disposition,
) -> sqlx::Result<bool> {
    let (status, transition, delay) = match disposition {
        Disposition::Failed => (FileStatus::Failed, Transition::Failed, None),
        Disposition::Retrying { delay } => {
            (FileStatus::Retrying, Transition::Retrying, Some(delay))
        }
        Disposition::DeadLettered => (FileStatus::DeadLettered, Transition::DeadLettered, None),
    };
    let mut transaction = pool.begin().await?;
    let org_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE files SET status = $3, error_class = $4, error_code = $5, error_message = $6, lease_token = NULL, lease_expires_at = NULL, \
         queued_at = CASE WHEN $7::float8 IS NULL THEN queued_at ELSE now() + make_interval(secs => $7) END, \
         finished_at = CASE WHEN $7::float8 IS NULL THEN now() ELSE NULL END, updated_at = now() \
         WHERE id = $1 AND lease_token = $2 RETURNING org_id",
    )
    .bind(file_id)
    .bind(lease)
    .bind(status.as_str())
    .bind(error.class())
    .bind(error.code())
    .bind(error.message())
    .bind(delay.map(|delay| delay.as_secs_f64()))
    .fetch_optional(&mut *transaction)
    .await?;
    let Some(org_id) = org_id else {
        return Ok(false);
    };
    record(
        &mut transaction,
        file_id,
        org_id,
        transition,
        failure_data(error, delay),
    )
    .await?;
    transaction.commit().await?;
    Ok(true)
}

fn failure_data(error: &JobError, delay: Option<Duration>) -> Value {
    let mut data = json!({ "error_class": error.class(), "error_code": error.code(), "message": error.message() });
    if let Some(delay) = delay {
        data["retry_in_secs"] = json!(delay.as_secs_f64());
    }
    data
}

/// `processing → queued`: the worker gives the file back unfinished (shutdown) and makes
/// its message visible at once. False when the lease is no longer this worker's.
pub async fn release(pool: &PgPool, file_id: Uuid, lease: Uuid) -> sqlx::Result<bool> {
    let mut transaction = pool.begin().await?;
    let org_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE files SET status = $3, stage = NULL, lease_token = NULL, lease_expires_at = NULL, queued_at = now(), updated_at = now() \
         WHERE id = $1 AND lease_token = $2 RETURNING org_id",
    )
    .bind(file_id)
    .bind(lease)
    .bind(FileStatus::Queued.as_str())
    .fetch_optional(&mut *transaction)
    .await?;
    let Some(org_id) = org_id else {
        return Ok(false);
    };
    record(
        &mut transaction,
        file_id,
        org_id,
        Transition::Released,
        json!({}),
    )
    .await?;
    transaction.commit().await?;
    Ok(true)
}

/// Puts a stalled file back on the queue, locking it first: one waiting on the queue
/// (its message may be lost) or one whose worker's lease ran out. A file whose lease ran
/// out on the message's last allowed receive is dead-lettered instead, as SQS did with
/// its message. `by` names who asked (the sweeper, an ops subject).
pub async fn requeue_stalled(
    connection: &mut PgConnection,
    file_id: Uuid,
    by: &str,
) -> sqlx::Result<Stalled> {
    let row: Option<(Uuid, String, bool, bool)> = sqlx::query_as(
        "SELECT org_id, status, last_receive, (lease_expires_at IS NULL OR lease_expires_at < now()) FROM files WHERE id = $1 FOR UPDATE",
    )
    .bind(file_id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some((org_id, status, last_receive, lease_expired)) = row else {
        return Ok(Stalled::NotStalled);
    };
    let status = FileStatus::from_name(&status);
    let waiting = matches!(status, Some(FileStatus::Queued | FileStatus::Retrying));
    let abandoned = status == Some(FileStatus::Processing) && lease_expired;
    if abandoned && last_receive {
        let error = JobError::transient(
            LAST_ATTEMPT_LOST,
            "the worker on the last allowed attempt stopped without recording an outcome; SQS dead-lettered the message",
        );
        sqlx::query(
            "UPDATE files SET status = $2, stage = NULL, error_class = $3, error_code = $4, error_message = $5, \
             lease_token = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now() WHERE id = $1",
        )
        .bind(file_id)
        .bind(FileStatus::DeadLettered.as_str())
        .bind(error.class())
        .bind(error.code())
        .bind(error.message())
        .execute(&mut *connection)
        .await?;
        let mut data = failure_data(&error, None);
        data["by"] = json!(by);
        record(connection, file_id, org_id, Transition::DeadLettered, data).await?;
        return Ok(Stalled::DeadLettered);
    }
    if !waiting && !abandoned {
        return Ok(Stalled::NotStalled);
    }
    sqlx::query(
        "UPDATE files SET status = $2, stage = NULL, lease_token = NULL, lease_expires_at = NULL, queued_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(file_id)
    .bind(FileStatus::Queued.as_str())
    .execute(&mut *connection)
    .await?;
    record(
        connection,
        file_id,
        org_id,
        Transition::Requeued,
        json!({ "from": status.map(FileStatus::as_str), "by": by }),
    )
    .await?;
    Ok(Stalled::Requeued)
}

/// Files the sweeper should look at, locked (others' locks skipped): waiting on the
/// queue for more than `waited` since they (re-)entered it, or leased by a worker whose
/// lease ran out more than `waited` ago.
pub async fn lock_stalled(
    connection: &mut PgConnection,
    waited: Duration,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    // Written out (not bound) so the planner can use the partial index `files_waiting`.
    sqlx::query_scalar(
        "SELECT id FROM files \
         WHERE (status IN ('queued', 'retrying') AND queued_at < now() - make_interval(secs => $1)) \
            OR (status = 'processing' AND lease_expires_at < now() - make_interval(secs => $1)) \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(waited.as_secs_f64())
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// Uploads never confirmed `older_than` after creation (their presigned URL long
/// expired), locked for the caller's transaction: id and object key. The caller removes
/// each object, then [`delete_abandoned_uploads`] removes the rows.
pub async fn lock_abandoned_uploads(
    connection: &mut PgConnection,
    older_than: Duration,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as(
        "SELECT id, object_key FROM files \
         WHERE status = $3 AND created_at < now() - make_interval(secs => $1) \
         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(older_than.as_secs_f64())
    .bind(limit)
    .bind(FileStatus::AwaitingUpload.as_str())
    .fetch_all(connection)
    .await
}

/// Removes the rows of uploads that are still unconfirmed (see [`lock_abandoned_uploads`]).
pub async fn delete_abandoned_uploads(
    connection: &mut PgConnection,
    ids: &[Uuid],
) -> sqlx::Result<u64> {
    let deleted = sqlx::query("DELETE FROM files WHERE id = ANY($1) AND status = $2")
        .bind(ids)
        .bind(FileStatus::AwaitingUpload.as_str())
        .execute(connection)
        .await?;
    Ok(deleted.rows_affected())
}

/// A file ops should look at: waiting on the queue too long, or its lease ran out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StuckFile {
    pub id: Uuid,
    pub org_id: Uuid,
    pub status: String,
    /// `queued_too_long` or `lease_expired`.
    pub reason: String,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub attempts: i32,
}

/// Files waiting on the queue for more than `waited`, and files whose lease ran out.
pub async fn stuck(pool: &PgPool, waited: Duration, limit: i64) -> sqlx::Result<Vec<StuckFile>> {
    sqlx::query_as(
        "SELECT id, org_id, status, \
                CASE WHEN status = $3 THEN 'lease_expired' ELSE 'queued_too_long' END AS reason, \
                CASE WHEN status = $3 THEN lease_expires_at ELSE queued_at END AS since, attempts \
         FROM files WHERE (status = ANY($2) AND queued_at < now() - make_interval(secs => $1)) \
                       OR (status = $3 AND lease_expires_at < now()) \
         ORDER BY since NULLS FIRST LIMIT $4",
    )
    .bind(waited.as_secs_f64())
    .bind(FileStatus::names_of(&[
        FileStatus::Queued,
        FileStatus::Retrying,
    ]))
    .bind(FileStatus::Processing.as_str())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How long the longest-waiting file has been on the queue (backoffs not counted).
pub async fn oldest_waiting_secs(pool: &PgPool) -> sqlx::Result<Option<f64>> {
    sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM now() - min(queued_at))::float8 FROM files WHERE status = ANY($1) AND queued_at <= now()",
    )
    .bind(FileStatus::names_of(&[FileStatus::Queued, FileStatus::Retrying]))
    .fetch_one(pool)
    .await
}

/// `ready | failed | dead_lettered → queued` with a clean slate, on request (the API or a
/// schedule). Its chunks stay, and search keeps serving them, until the worker stores the
/// new ones. False when the file is not finished (or not the org's).
pub async fn reprocess(
    connection: &mut PgConnection,
    file_id: Uuid,
    org_id: Uuid,
    by: &str,
) -> sqlx::Result<bool> {
    let updated = sqlx::query(
        "UPDATE files SET status = $3, queued_at = now(), updated_at = now(), attempts = 0, stage = NULL, \
         error_class = NULL, error_code = NULL, error_message = NULL, lease_token = NULL, lease_expires_at = NULL, finished_at = NULL \
         WHERE id = $1 AND org_id = $2 AND status = ANY($4)",
    )
    .bind(file_id)
    .bind(org_id)
    .bind(FileStatus::Queued.as_str())
    .bind(FileStatus::names_of(&FileStatus::REPROCESSABLE))
    .execute(&mut *connection)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    record(
        connection,
        file_id,
        org_id,
        Transition::Reprocessed,
        json!({ "by": by }),
    )
    .await?;
    Ok(true)
}

/// `dead_lettered → queued` before an ops redrive moves the file's message back to the
/// queue (the moved message is the wake-up: no new one). False when it is not
/// dead-lettered.
pub async fn reopen_dead_lettered(
    connection: &mut PgConnection,
    file_id: Uuid,
    by: &str,
) -> sqlx::Result<bool> {
    let org_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE files SET status = $2, queued_at = now(), updated_at = now(), attempts = 0, stage = NULL, \
         error_class = NULL, error_code = NULL, error_message = NULL, finished_at = NULL \
         WHERE id = $1 AND status = $3 RETURNING org_id",
    )
    .bind(file_id)
    .bind(FileStatus::Queued.as_str())
    .bind(FileStatus::DeadLettered.as_str())
    .fetch_optional(&mut *connection)
    .await?;
    let Some(org_id) = org_id else {
        return Ok(false);
    };
    record(
        connection,
        file_id,
        org_id,
        Transition::Redriven,
        json!({ "by": by }),
    )
    .await?;
    Ok(true)
}

/// Deletes the file's row; its chunks and events go with it, and a worker still on it
/// loses its fence. False when there was no such file of the org.
pub async fn delete(
    connection: &mut PgConnection,
    file_id: Uuid,
    org_id: Uuid,
) -> sqlx::Result<bool> {
    let deleted = sqlx::query("DELETE FROM files WHERE id = $1 AND org_id = $2")
        .bind(file_id)
        .bind(org_id)
        .execute(connection)
        .await?;
    Ok(deleted.rows_affected() == 1)
}
