//! Scheduled reprocessing: schedules live in Postgres (cron in UTC, an action, a filter),
//! and each tick fires exactly once, whoever fires it: api-lite's leader
//! (`api_lite::scheduler`) or a worker handling a `schedule.tick` message from
//! EventBridge Scheduler.
//!
//! The tick is an ordinary job kind: [`ScheduleTickHandler`] is registered with the
//! worker loop like any other handler.
//!
//! - **Exactly once.** Every fire is recorded under the unique key (schedule, fire time)
//!   *in the same transaction* as its action: a second fire of the same tick, from an
//!   overlapping leader or another trigger, inserts nothing and does nothing.
//! - **Catch-up once.** A tick is due when it is the latest tick at or before now and
//!   later than the schedule's last fire (or its creation). Ticks missed while no leader
//!   ran collapse into that one fire.

use std::str::FromStr;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::error::JobError;
use crate::files;
use crate::lease::{Claim, Receipt};
use crate::queue::{JobKind, JobMessage};
use crate::worker::{Disposition, JobHandler};

/// Files one fire touches when its filter names no limit.
pub const DEFAULT_FIRE_LIMIT: i64 = 1000;

/// What a schedule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Re-enqueue files that ended `failed` or `dead_lettered` with a transient error.
    RetryTransient,
    /// Reprocess ready files whose chunks use a model other than the current default.
    Reembed,
    /// Reprocess ready files extracted by an older extractor version.
    Reextract,
}

impl Action {
    pub const ALL: [&str; 3] = ["retry_transient", "reembed", "reextract"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RetryTransient => "retry_transient",
            Self::Reembed => "reembed",
            Self::Reextract => "reextract",
        }
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "retry_transient" => Ok(Self::RetryTransient),
            "reembed" => Ok(Self::Reembed),
            "reextract" => Ok(Self::Reextract),
            other => Err(format!(
                "unknown action {other:?}; use one of {}",
                Self::ALL.join(", ")
            )),
        }
    }
}

/// Which files a fire may touch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// `reextract` only: files whose text came from this engine (`pdf-extract`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// `reextract` only: files extracted by exactly this extractor version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extractor_version: Option<i32>,
}

impl Filter {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(limit) = self.limit
            && !(1..=100_000).contains(&limit)
        {
            return Err("filter.limit must be between 1 and 100000".into());
        }
        if let Some(engine) = &self.engine
            && !crate::engines::ALL.contains(&engine.as_str())
        {
            return Err(format!(
                "filter.engine {engine:?} is not an extraction engine; use one of {}",
                crate::engines::ALL.join(", ")
            ));
        }
        if self.extractor_version.is_some_and(|version| version < 0) {
            return Err("filter.extractor_version must not be negative".into());
        }
        Ok(())
    }
}

/// Parses a cron expression: five fields (minute first), or six with seconds first.
/// Times are UTC.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) && !expression.trim_start().starts_with('@') {
        return Err(format!(
            "cron {expression:?} has {fields} fields; use 5 (minute hour day month weekday) or 6 (seconds first)"
        ));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|error| format!("cron {expression:?} is not valid: {error}"))
}

/// The latest tick of `cron` at or before `now`, if any.
pub fn latest_tick(cron: &Cron, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_previous_occurrence(&now, true).ok()
}

/// The next tick after `now`.
pub fn next_tick(cron: &Cron, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&now, false).ok()
}

/// What the actions need to know about the fleet.
#[derive(Debug, Clone)]
pub struct ActionContext {
    /// The embedding model workers use now (`reembed` moves files to it).
    pub default_model: String,
    /// The extractor version workers run now (`reextract` moves files to it).
    pub extractor_version: i32,
}

/// One recorded fire.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Fire {
    pub schedule_id: Uuid,
    pub fire_time: DateTime<Utc>,
    pub fired_at: DateTime<Utc>,
    pub manual: bool,
    pub fired_by: String,
    pub affected: i32,
}

/// A schedule as the scheduler reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub name: String,
    pub cron: String,
    pub action: String,
    pub filter: Value,
    pub created_at: DateTime<Utc>,
    pub last_fire_time: Option<DateTime<Utc>>,
}

pub const SCHEDULE_ROW_SELECT: &str = "SELECT s.id, s.name, s.cron, s.action, s.filter, s.created_at, \
     (SELECT max(f.fire_time) FROM schedule_fires f WHERE f.schedule_id = s.id AND NOT f.manual) AS last_fire_time \
     FROM schedules s";

/// Fires `schedule` for `fire_time` unless that tick already fired: records the fire,
/// runs the action and writes the audit entry in one transaction. Returns the fire, or
/// None when another replica (or an earlier call) fired this tick.
pub async fn fire(
    pool: &PgPool,
    schedule: &ScheduleRow,
    fire_time: DateTime<Utc>,
    manual: bool,
    fired_by: &str,
    context: &ActionContext,
) -> sqlx::Result<Option<Fire>> {
    let action: Action = match schedule.action.parse() {
        Ok(action) => action,
        Err(error) => {
            tracing::error!(schedule = %schedule.name, %error, "schedule has an unknown action; skipped");
            return Ok(None);
        }
    };
    let filter: Filter = serde_json::from_value(schedule.filter.clone()).unwrap_or_default();
    let mut transaction = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO schedule_fires (schedule_id, fire_time, manual, fired_by) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (schedule_id, fire_time) DO NOTHING",
    )
    .bind(schedule.id)
    .bind(fire_time)
    .bind(manual)
    .bind(fired_by)
    .execute(&mut *transaction)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(None);
    }
    let affected = run_action(&mut transaction, action, &filter, context).await?;
    let recorded: Fire = sqlx::query_as(
        "UPDATE schedule_fires SET affected = $3 WHERE schedule_id = $1 AND fire_time = $2 \
         RETURNING schedule_id, fire_time, fired_at, manual, fired_by, affected",
    )
    .bind(schedule.id)
    .bind(fire_time)
    .bind(affected as i32)
    .fetch_one(&mut *transaction)
    .await?;
    crate::audit::record(
        &mut transaction,
        fired_by,
        "schedule.fire",
        &schedule.name,
        affected as i64,
        json!({ "schedule_id": schedule.id, "action": action.as_str(), "fire_time": fire_time, "manual": manual }),
    )
    .await?;
    transaction.commit().await?;
    metrics::counter!(crate::metrics::SCHEDULE_FIRES, "action" => action.as_str()).increment(1);
    metrics::counter!(crate::metrics::SCHEDULE_FILES, "action" => action.as_str())
        .increment(affected as u64);
    tracing::info!(schedule = %schedule.name, action = action.as_str(), %fire_time, manual, affected, "schedule fired");
    Ok(Some(recorded))
}

/// Selects the files the action applies to (locking them, skipping ones another
/// transaction holds) and reprocesses each. Returns how many were enqueued.
async fn run_action(
    connection: &mut PgConnection,
    action: Action,
    filter: &Filter,
    context: &ActionContext,
) -> sqlx::Result<usize> {
    let limit = filter.limit.unwrap_or(DEFAULT_FIRE_LIMIT);
    let candidates: Vec<(Uuid, Uuid)> = match action {
        Action::RetryTransient => {
            sqlx::query_as(
                "SELECT id, org_id FROM files WHERE status = ANY($3) AND error_class = 'transient' \
                 AND ($1::uuid IS NULL OR org_id = $1) ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(filter.org_id)
            .bind(limit)
            .bind(vec![
                files::FileStatus::Failed.as_str(),
                files::FileStatus::DeadLettered.as_str(),
            ])
            .fetch_all(&mut *connection)
            .await?
        }
        Action::Reembed => {
            sqlx::query_as(
                "SELECT id, org_id FROM files WHERE status = $4 AND embedding_model IS DISTINCT FROM $3 \
                 AND ($1::uuid IS NULL OR org_id = $1) ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(filter.org_id)
            .bind(limit)
            .bind(&context.default_model)
            .bind(files::FileStatus::Ready.as_str())
            .fetch_all(&mut *connection)
            .await?
        }
        // Without an engine or version filter: every file an older extractor produced.
        // With one: exactly the files that engine or version produced, current ones included
        // (say, every PDF pdf-extract read while libpdfium was missing).
        Action::Reextract => {
            sqlx::query_as(
                "SELECT id, org_id FROM files WHERE status = $6 \
                 AND CASE WHEN $4::text IS NULL AND $5::int IS NULL THEN COALESCE(extractor_version, 0) < $3 ELSE true END \
                 AND ($4::text IS NULL OR extraction_engine = $4) AND ($5::int IS NULL OR extractor_version = $5) \
                 AND ($1::uuid IS NULL OR org_id = $1) ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(filter.org_id)
            .bind(limit)
            .bind(context.extractor_version)
            .bind(filter.engine.as_deref())
            .bind(filter.extractor_version)
            .bind(files::FileStatus::Ready.as_str())
            .fetch_all(&mut *connection)
            .await?
        }
    };
    let mut enqueued = 0;
    let by = format!("schedule:{}", action.as_str());
    for (file_id, org_id) in candidates {
        if files::reprocess(connection, file_id, org_id, &by).await? {
            enqueued += 1;
        }
    }
    Ok(enqueued)
}

/// One pass: fires every enabled schedule whose latest tick at or before `now` has not
/// fired yet. Returns the fires made.
pub async fn fire_due(
    pool: &PgPool,
    now: DateTime<Utc>,
    fired_by: &str,
    context: &ActionContext,
) -> sqlx::Result<Vec<Fire>> {
    let statement = format!("{SCHEDULE_ROW_SELECT} WHERE s.enabled ORDER BY s.id");
    let schedules: Vec<ScheduleRow> = sqlx::query_as(&statement).fetch_all(pool).await?;
    let mut fires = Vec::new();
    for schedule in schedules {
        let cron = match parse_cron(&schedule.cron) {
            Ok(cron) => cron,
            Err(error) => {
                tracing::error!(schedule = %schedule.name, %error, "schedule has a bad cron; skipped");
                continue;
            }
        };
        let Some(tick) = latest_tick(&cron, now) else {
            continue;
        };
        let since = schedule.last_fire_time.unwrap_or(schedule.created_at);
        if tick <= since {
            continue;
        }
        if let Some(fired) = fire(pool, &schedule, tick, false, fired_by, context).await? {
            fires.push(fired);
        }
    }
    Ok(fires)
}

/// A manual fire ("run now"), keyed by the current millisecond.
pub async fn run_now(
    pool: &PgPool,
    schedule: &ScheduleRow,
    actor: &str,
    context: &ActionContext,
) -> sqlx::Result<Option<Fire>> {
    let now = Utc::now()
        .duration_trunc(TimeDelta::milliseconds(1))
        .unwrap_or_else(|_| Utc::now());
    fire(pool, schedule, now, true, actor, context).await
}

/// Handles `schedule.tick` messages (EventBridge Scheduler on AWS): fires the schedules
/// due now. A tick has no row and takes no lease. A failure leaves the tick to SQS's
/// retries (and its DLQ); a tick that arrives late or twice is harmless, as each
/// (schedule, fire time) fires once.
pub struct ScheduleTickHandler {
    pub pool: PgPool,
    pub context: ActionContext,
    /// Recorded as `fired_by`.
    pub instance: String,
}

#[async_trait]
impl JobHandler for ScheduleTickHandler {
    fn kind(&self) -> JobKind {
        JobKind::ScheduleTick
    }

    async fn claim(&self, _job: &JobMessage, _receipt: Receipt<'_>) -> Result<Claim, JobError> {
        Ok(Claim::Acquired {
            lease: Uuid::nil(),
            attempt: 1,
        })
    }

    async fn run(
        &self,
        _job: &JobMessage,
        _lease: Uuid,
        _attempt: u32,
        _cancel: CancellationToken,
    ) -> Result<(), JobError> {
        let fires = fire_due(&self.pool, Utc::now(), &self.instance, &self.context).await?;
        tracing::info!(fired = fires.len(), "schedule tick handled");
        Ok(())
    }

    async fn renew(&self, _job: &JobMessage, _lease: Uuid) -> Result<bool, JobError> {
        Ok(true)
    }

    async fn record_failure(
        &self,
        _job: &JobMessage,
        _lease: Uuid,
        _error: &JobError,
        _disposition: Disposition,
    ) -> Result<(), JobError> {
        Ok(())
    }

    async fn release(&self, _job: &JobMessage, _lease: Uuid) -> Result<(), JobError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn cron_accepts_five_and_six_fields_and_rejects_the_rest() {
        assert!(parse_cron("0 3 * * *").is_ok());
        assert!(parse_cron("*/5 * * * * *").is_ok());
        assert!(parse_cron("@hourly").is_ok());
        assert!(parse_cron("0 3 * *").unwrap_err().contains("4 fields"));
        assert!(
            parse_cron("0 3 * * * * 2030")
                .unwrap_err()
                .contains("7 fields")
        );
        assert!(parse_cron("61 * * * *").unwrap_err().contains("not valid"));
    }

    #[test]
    fn latest_tick_is_at_or_before_now_in_utc() {
        let nightly = parse_cron("0 3 * * *").unwrap();
        assert_eq!(
            latest_tick(&nightly, at("2026-11-23T10:15:00Z")),
            Some(at("2026-11-23T03:00:00Z"))
        );
        assert_eq!(
            latest_tick(&nightly, at("2026-11-23T03:00:00Z")),
            Some(at("2026-11-23T03:00:00Z"))
        );
        assert_eq!(
            next_tick(&nightly, at("2026-11-23T03:00:00Z")),
            Some(at("2026-11-24T03:00:00Z"))
        );
        let every_second = parse_cron("* * * * * *").unwrap();
        assert_eq!(
            latest_tick(&every_second, at("2026-11-23T10:15:07.600Z")),
            Some(at("2026-11-23T10:15:07Z"))
        );
    }

    #[test]
    fn actions_and_filters_parse_strictly() {
        assert_eq!("reembed".parse::<Action>(), Ok(Action::Reembed));
        assert!(
            "delete_everything"
                .parse::<Action>()
                .unwrap_err()
                .contains("retry_transient")
        );
        let filter: Filter = serde_json::from_value(json!({"limit": 5})).unwrap();
        assert_eq!(filter.limit, Some(5));
        assert!(serde_json::from_value::<Filter>(json!({"status": "x"})).is_err());
        assert!(
            Filter {
                limit: Some(0),
                ..Filter::default()
            }
            .validate()
            .is_err()
        );
        let by_engine: Filter =
            serde_json::from_value(json!({"engine": "pdf-extract", "extractor_version": 1}))
                .unwrap();
        assert!(by_engine.validate().is_ok());
        assert!(
            Filter {
                engine: Some("poppler".into()),
                ..Filter::default()
            }
            .validate()
            .unwrap_err()
            .contains("pdfium")
        );
    }
}
