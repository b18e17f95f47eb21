//! Dead-letter queues: browse with each job's error joined from Postgres, redrive back
//! to the source queue (a background task with progress), discard.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::dlq::DeadLetter;
use shared::queue::{JobKind, JobMessage, Queue};
use uuid::Uuid;

use crate::auth::Operator;
use crate::error::{ApiError, Dependency};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::ops::{audit, queue_named};
use crate::state::AppState;
use shared::{executions, files};

/// How long a browse hides the messages it looks at (they are given back at once after).
const PEEK_HOLD: Duration = Duration::from_secs(10);
/// How long a redrive or discard holds messages it is working through.
const WORK_HOLD: Duration = Duration::from_secs(300);
/// The most messages `show` looks through for one id.
const SHOW_SCAN_LIMIT: usize = 1000;
/// The error code shown for messages no worker could parse.
pub const POISON_CODE: &str = "poison_message";

/// One dead message with what Postgres knows about its job.
#[derive(Debug, Clone, Serialize)]
pub struct DeadMessageView {
    pub message_id: String,
    pub kind: Option<&'static str>,
    pub job_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub receive_count: u32,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub error_class: Option<String>,
    pub error_code: Option<String>,
    pub last_error: Option<String>,
    pub attempts: Option<i32>,
    pub poison: bool,
    pub body: String,
    #[serde(skip)]
    job_kind: Option<JobKind>,
}

#[derive(Debug, sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    status: String,
    error_class: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    attempts: i32,
    updated_at: DateTime<Utc>,
}

/// Joins each message with its job row.
async fn describe(
    pool: &sqlx::PgPool,
    letters: &[DeadLetter],
) -> sqlx::Result<Vec<DeadMessageView>> {
    let parsed: Vec<Option<JobMessage>> = letters
        .iter()
        .map(|letter| JobMessage::parse(&letter.body).ok())
        .collect();
    let ids_of = |wanted: JobKind| -> Vec<Uuid> {
        parsed
            .iter()
            .flatten()
            .filter(|message| message.kind == wanted)
            .map(|message| message.job_id)
            .collect()
    };
    let mut rows: HashMap<Uuid, JobRow> = HashMap::new();
    let file_ids = ids_of(JobKind::FileProcess);
    if !file_ids.is_empty() {
        let found: Vec<JobRow> = sqlx::query_as(
            "SELECT id, status, error_class, error_code, error_message, attempts, updated_at FROM files WHERE id = ANY($1)",
        )
        .bind(&file_ids)
        .fetch_all(pool)
        .await?;
        rows.extend(found.into_iter().map(|row| (row.id, row)));
    }
    let execution_ids = ids_of(JobKind::AgentRun);
    if !execution_ids.is_empty() {
        let found: Vec<JobRow> = sqlx::query_as(
            "SELECT id, status, error_class, error_code, error_message, attempts, updated_at FROM executions WHERE id = ANY($1)",
        )
        .bind(&execution_ids)
        .fetch_all(pool)
        .await?;
        rows.extend(found.into_iter().map(|row| (row.id, row)));
    }
    Ok(letters
        .iter()
        .zip(parsed)
        .map(|(letter, message)| {
            let row = message
                .as_ref()
                .and_then(|message| rows.get(&message.job_id));
            let poison = message.is_none();
            DeadMessageView {
                message_id: letter.message_id.clone(),
                kind: message.as_ref().map(|message| message.kind.as_str()),
                job_id: message.as_ref().map(|message| message.job_id),
                org_id: message.as_ref().map(|message| message.org_id),
                receive_count: letter.receive_count,
                first_seen: letter.sent_at,
                last_seen: row.map(|row| row.updated_at).or(letter.sent_at),
                status: row.map(|row| row.status.clone()),
                error_class: if poison {
                    Some("permanent".into())
                } else {
                    row.and_then(|row| row.error_class.clone())
                },
                error_code: if poison {
                    Some(POISON_CODE.into())
                } else {
                    row.and_then(|row| row.error_code.clone())
                },
                last_error: letter
                    .error
                    .clone()
                    .or_else(|| row.and_then(|row| row.error_message.clone())),
                attempts: row.map(|row| row.attempts),
                poison,
                body: letter.body.clone(),
                job_kind: message.as_ref().map(|message| message.kind),
            }
        })
        .collect())
}

fn unavailable(error: shared::queue::QueueError) -> ApiError {
    ApiError::unavailable(Dependency::Queue, error)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<usize>,
}

pub async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(queue_name): ApiPath<String>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<Value>, ApiError> {
    let (queue, _) = queue_named(&state, &queue_name)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 500"));
    }
    let letters = queue
        .receive_dead_letters(limit + 1, PEEK_HOLD)
        .await
        .map_err(unavailable)?;
    let described = describe(&state.pool, &letters).await;
    queue
        .release_dead_letters(&letters)
        .await
        .map_err(unavailable)?;
    let mut messages = described?;
    let truncated = messages.len() > limit;
    messages.truncate(limit);
    Ok(ApiJson(
        json!({ "queue": queue_name, "truncated": truncated, "messages": messages }),
    ))
}

pub async fn show(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath((queue_name, message_id)): ApiPath<(String, String)>,
) -> Result<ApiJson<DeadMessageView>, ApiError> {
    let (queue, _) = queue_named(&state, &queue_name)?;
    let letters = queue
        .receive_dead_letters(SHOW_SCAN_LIMIT, PEEK_HOLD)
        .await
        .map_err(unavailable)?;
    let wanted: Vec<DeadLetter> = letters
        .iter()
        .filter(|letter| letter.message_id == message_id)
        .cloned()
        .collect();
    let described = describe(&state.pool, &wanted).await;
    queue
        .release_dead_letters(&letters)
        .await
        .map_err(unavailable)?;
    described?
        .into_iter()
        .next()
        .map(ApiJson)
        .ok_or(ApiError::NotFound("dead message"))
}

/// Which dead messages an action applies to: exactly one of ids, a filter, or all.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<DeadFilter>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing)]
    pub rate_per_sec: Option<u32>,
    #[serde(default, skip_serializing)]
    pub confirm: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeadFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<Uuid>,
}

/// A validated [`Selection`].
#[derive(Debug, Clone)]
enum Selector {
    Ids(HashSet<String>),
    Filter(DeadFilter),
    All,
}

impl Selector {
    fn from_selection(selection: &Selection) -> Result<Self, ApiError> {
        let chosen = usize::from(!selection.message_ids.is_empty())
            + usize::from(selection.filter.is_some())
            + usize::from(selection.all);
        if chosen != 1 {
            return Err(ApiError::bad_request(
                "invalid_selector",
                "name exactly one of message_ids, filter or all",
            ));
        }
        if let Some(filter) = &selection.filter {
            if filter.kind.is_none() && filter.error_code.is_none() && filter.org_id.is_none() {
                return Err(ApiError::bad_request(
                    "invalid_selector",
                    "a filter needs kind, error_code or org_id; use all to select everything",
                ));
            }
            return Ok(Self::Filter(filter.clone()));
        }
        if selection.all {
            return Ok(Self::All);
        }
        Ok(Self::Ids(selection.message_ids.iter().cloned().collect()))
    }

    fn matches(&self, view: &DeadMessageView) -> bool {
        match self {
            Self::All => true,
            Self::Ids(ids) => ids.contains(&view.message_id),
            Self::Filter(filter) => {
                filter
                    .kind
                    .as_deref()
                    .is_none_or(|kind| view.kind == Some(kind))
                    && filter
                        .error_code
                        .as_deref()
                        .is_none_or(|code| view.error_code.as_deref() == Some(code))
                    && filter.org_id.is_none_or(|org| view.org_id == Some(org))
            }
        }
    }

    /// How many messages the action should find, when that is known up front.
    fn expected(&self) -> Option<usize> {
        match self {
            Self::Ids(ids) => Some(ids.len()),
            _ => None,
        }
    }
}

/// A background DLQ task, as the API shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TaskView {
    pub id: Uuid,
    pub action: String,
    pub queue: String,
    pub status: String,
    pub method: String,
    pub requested_by: String,
    pub selector: Value,
    pub total: Option<i32>,
    pub moved: i32,
    pub failed: i32,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const TASK_COLUMNS: &str = "id, action, queue, status, method, requested_by, selector, total, moved, failed, error, created_at, updated_at, finished_at";

async fn load_task(pool: &sqlx::PgPool, id: Uuid) -> Result<TaskView, ApiError> {
    let statement = format!("SELECT {TASK_COLUMNS} FROM ops_tasks WHERE id = $1");
    sqlx::query_as(&statement)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(ApiError::NotFound("task"))
}

pub async fn task(
    State(state): State<AppState>,
    _operator: Operator,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<Value>, ApiError> {
    Ok(ApiJson(
        json!({ "task": load_task(&state.pool, id).await? }),
    ))
}

const MOVE_TASK: &str = "move_task";
const RECEIVE_SEND_DELETE: &str = "receive_send_delete";

pub async fn redrive(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(queue_name): ApiPath<String>,
    ApiJson(selection): ApiJson<Selection>,
) -> Result<(StatusCode, ApiJson<Value>), ApiError> {
    let (queue, kind) = queue_named(&state, &queue_name)?;
    let selector = Selector::from_selection(&selection)?;
    let rate = selection
        .rate_per_sec
        .unwrap_or(state.settings.api.redrive_rate_per_sec);
    if !(1..=1000).contains(&rate) {
        return Err(ApiError::invalid("rate_per_sec must be between 1 and 1000"));
    }
    let total = match selector {
        // A count is only for the progress bar: no count is no reason to refuse.
        Selector::All => queue
            .depth()
            .await
            .ok()
            .map(|depth| depth.dead_letter_visible as usize),
        _ => selector.expected(),
    };
    // SQS can move everything itself. Only file jobs qualify: their worker re-claims a
    // dead-lettered file, while a dead-lettered execution must be reopened row by row.
    let mut move_task_handle = None;
    if matches!(selector, Selector::All)
        && kind == JobKind::FileProcess
        && state.settings.api.redrive_use_move_task
    {
        match queue.start_move_task(Some(rate as i32)).await {
            Ok(handle) => move_task_handle = Some(handle),
            Err(error) => {
                tracing::info!(%error, "no StartMessageMoveTask here; moving messages one by one")
            }
        }
    }
    let task_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO ops_tasks (id, action, queue, method, requested_by, selector, total) VALUES ($1, 'redrive', $2, $3, $4, $5, $6)",
    )
    .bind(task_id)
    .bind(&queue_name)
    .bind(if move_task_handle.is_some() { MOVE_TASK } else { RECEIVE_SEND_DELETE })
    .bind(&operator.subject)
    .bind(serde_json::to_value(&selection).unwrap_or_default())
    .bind(total.map(|total| total as i32))
    .execute(&state.pool)
    .await?;
    let work = Redrive {
        state: state.clone(),
        queue: queue.clone(),
        queue_name: queue_name.clone(),
        task_id,
        actor: operator.subject.clone(),
        selection,
    };
    tokio::spawn(async move {
        match move_task_handle {
            Some(handle) => work.follow_move_task(handle).await,
            None => work.move_one_by_one(selector, rate).await,
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(json!({ "task": load_task(&state.pool, task_id).await? })),
    ))
}

/// One running redrive.
struct Redrive {
    state: AppState,
    queue: Queue,
    queue_name: String,
    task_id: Uuid,
    actor: String,
    selection: Selection,
}

impl Redrive {
    async fn progress(&self, moved: usize, failed: usize, total: Option<usize>) {
        let updated = sqlx::query(
            "UPDATE ops_tasks SET moved = $2, failed = $3, total = COALESCE($4, total), updated_at = now() WHERE id = $1",
        )
        .bind(self.task_id)
        .bind(moved as i32)
        .bind(failed as i32)
        .bind(total.map(|total| total as i32))
        .execute(&self.state.pool)
        .await;
        if let Err(error) = updated {
            tracing::warn!(%error, task_id = %self.task_id, "redrive progress not recorded");
        }
    }

    /// Marks the task finished and writes the audit entry.
    async fn finish(&self, moved: usize, failed: usize, error: Option<String>, method: &str) {
        let outcome = async {
            let mut transaction = self.state.pool.begin().await?;
            sqlx::query(
                "UPDATE ops_tasks SET status = $2, moved = $3, failed = $4, error = $5, \
                 total = COALESCE(total, $3 + $4), finished_at = now(), updated_at = now() WHERE id = $1",
            )
            .bind(self.task_id)
            .bind(if error.is_none() && failed == 0 { "succeeded" } else { "failed" })
            .bind(moved as i32)
            .bind(failed as i32)
            .bind(&error)
            .execute(&mut *transaction)
            .await?;
            audit::record(
                &mut transaction,
                &self.actor,
                "dlq.redrive",
                &self.queue_name,
                moved as i64,
                json!({ "task_id": self.task_id, "selector": self.selection, "method": method, "failed": failed, "error": error }),
            )
            .await?;
            transaction.commit().await
        }
        .await;
        if let Err(error) = outcome {
            tracing::error!(%error, task_id = %self.task_id, "redrive outcome not recorded");
        }
    }

    async fn follow_move_task(self, handle: String) {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match self.queue.move_task_progress(&handle).await {
                Ok(Some(progress)) => {
                    let moved = progress.moved as usize;
                    self.progress(moved, 0, progress.to_move.map(|count| count as usize))
                        .await;
                    if progress.is_finished() {
                        metrics::counter!(shared::metrics::DLQ_REDRIVEN, "queue" => self.queue_name.clone(), "method" => MOVE_TASK)
                            .increment(progress.moved);
                        let error = (progress.status != "COMPLETED").then(|| {
                            format!(
                                "move task ended {}: {}",
                                progress.status,
                                progress.failure_reason.clone().unwrap_or_default()
                            )
                        });
                        self.finish(moved, 0, error, MOVE_TASK).await;
                        return;
                    }
                }
                Ok(None) => {
                    self.finish(
                        0,
                        0,
                        Some("SQS no longer lists the move task".into()),
                        MOVE_TASK,
                    )
                    .await;
                    return;
                }
                Err(error) => tracing::warn!(%error, "reading move task progress failed; retrying"),
            }
        }
    }

    /// Moves matching messages one at a time, at most `rate` a second: reopen the job's
    /// row, send the message to the source queue, then delete it from the DLQ.
    ///
    /// It looks at no more messages than the DLQ held when it started: a message that
    /// fails again at once (poison) comes straight back to the DLQ as a new message, and
    /// would otherwise keep the redrive going for ever.
    async fn move_one_by_one(self, selector: Selector, rate: u32) {
        let pause = Duration::from_secs_f64(1.0 / f64::from(rate));
        let mut moved = 0;
        let mut failed = 0;
        let mut left_alone = Vec::new();
        let mut error = None;
        let wanted = selector.expected();
        let on_the_dlq = match self.queue.dead_letter_count().await {
            Ok(count) => count as usize,
            Err(depth_error) => {
                let message = format!("cannot count the DLQ before moving: {depth_error}");
                self.finish(0, 0, Some(message), RECEIVE_SEND_DELETE).await;
                return;
            }
        };
        let mut looked_at = 0usize;
        'receiving: while looked_at < on_the_dlq {
            let batch_size = (on_the_dlq - looked_at).min(10);
            let batch = match self.queue.receive_dead_letters(batch_size, WORK_HOLD).await {
                Ok(batch) => batch,
                Err(receive_error) => {
                    // The task row is shown to ops: the SDK's words go to the log only.
                    tracing::warn!(error = %receive_error, task_id = %self.task_id, "redrive: receiving from the dlq failed");
                    error = Some("receiving from the DLQ failed; see the api-lite log".into());
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            let views = match describe(&self.state.pool, &batch).await {
                Ok(views) => views,
                Err(database_error) => {
                    left_alone.extend(batch);
                    tracing::warn!(error = %database_error, task_id = %self.task_id, "redrive: reading the jobs failed");
                    error = Some(
                        "reading the jobs from the database failed; see the api-lite log".into(),
                    );
                    break;
                }
            };
            for (letter, view) in batch.into_iter().zip(views) {
                looked_at += 1;
                if !selector.matches(&view) {
                    left_alone.push(letter);
                    continue;
                }
                match self.move_letter(&letter, &view).await {
                    Ok(()) => moved += 1,
                    Err(move_error) => {
                        // Nothing was deleted: the message stays on the DLQ and is given
                        // back below.
                        tracing::warn!(error = %move_error, message_id = %letter.message_id, "redrive of one message failed");
                        failed += 1;
                        left_alone.push(letter);
                    }
                }
                self.progress(moved, failed, None).await;
                if wanted.is_some_and(|wanted| moved + failed >= wanted) {
                    break 'receiving;
                }
                tokio::time::sleep(pause).await;
            }
        }
        if let Err(release_error) = self.queue.release_dead_letters(&left_alone).await {
            tracing::warn!(error = %release_error, "could not give back DLQ messages; they show again after the hold");
        }
        if error.is_none() && wanted.is_some_and(|wanted| moved + failed < wanted) {
            error = Some(format!(
                "{} of the named messages were not on the DLQ",
                wanted.unwrap_or(0) - moved - failed
            ));
        }
        metrics::counter!(shared::metrics::DLQ_REDRIVEN, "queue" => self.queue_name.clone(), "method" => RECEIVE_SEND_DELETE)
            .increment(moved as u64);
        self.finish(moved, failed, error, RECEIVE_SEND_DELETE).await;
    }

    async fn move_letter(&self, letter: &DeadLetter, view: &DeadMessageView) -> anyhow::Result<()> {
        if let (Some(kind), Some(job_id)) = (view.job_kind, view.job_id) {
            let mut connection = self.state.pool.acquire().await?;
            match kind {
                JobKind::FileProcess => {
                    files::reopen_dead_lettered(&mut connection, job_id, &self.actor).await?;
                }
                JobKind::AgentRun => {
                    executions::reopen_dead_lettered(&mut connection, job_id, &self.actor).await?;
                }
                // A clock tick has no row to reopen.
                JobKind::ScheduleTick => {}
            }
        }
        self.queue.move_dead_letter(letter).await?;
        Ok(())
    }
}

pub async fn discard(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(queue_name): ApiPath<String>,
    ApiJson(selection): ApiJson<Selection>,
) -> Result<ApiJson<Value>, ApiError> {
    let (queue, _) = queue_named(&state, &queue_name)?;
    let selector = Selector::from_selection(&selection)?;
    if !selection.confirm {
        return Err(ApiError::bad_request(
            "confirmation_required",
            "discarding deletes messages for good; send \"confirm\": true",
        ));
    }
    let mut discarded = 0usize;
    let mut left_alone = Vec::new();
    let mut failure = None;
    let wanted = selector.expected();
    'receiving: loop {
        let batch = queue
            .receive_dead_letters(10, WORK_HOLD)
            .await
            .map_err(unavailable)?;
        if batch.is_empty() {
            break;
        }
        let views = match describe(&state.pool, &batch).await {
            Ok(views) => views,
            Err(error) => {
                left_alone.extend(batch);
                failure = Some(ApiError::from(error));
                break;
            }
        };
        for (letter, view) in batch.into_iter().zip(views) {
            if !selector.matches(&view) {
                left_alone.push(letter);
                continue;
            }
            match queue.discard_dead_letter(&letter).await {
                Ok(()) => discarded += 1,
                Err(error) => {
                    tracing::warn!(%error, message_id = %letter.message_id, "discard of one message failed")
                }
            }
            if wanted.is_some_and(|wanted| discarded >= wanted) {
                break 'receiving;
            }
        }
    }
    if let Err(error) = queue.release_dead_letters(&left_alone).await {
        tracing::warn!(%error, "could not give back DLQ messages; they show again after the hold");
    }
    metrics::counter!(shared::metrics::DLQ_DISCARDED, "queue" => queue_name.clone())
        .increment(discarded as u64);
    let mut transaction = state.pool.begin().await?;
    audit::record(
        &mut transaction,
        &operator.subject,
        "dlq.discard",
        &queue_name,
        discarded as i64,
        json!({ "selector": selection }),
    )
    .await?;
    transaction.commit().await?;
    if let Some(error) = failure {
        return Err(error);
    }
    Ok(ApiJson(json!({ "discarded": discarded })))
}
