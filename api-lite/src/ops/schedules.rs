//! Managing reprocessing schedules; the firing itself lives in [`crate::scheduler`].

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Operator;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::ops::audit;
use crate::state::AppState;
use shared::schedules::{self as scheduler, Action, ActionContext, Filter, Fire, ScheduleRow};

/// What the actions compare against: the fleet's current model and extractor.
pub fn action_context(state: &AppState) -> ActionContext {
    ActionContext {
        default_model: state
            .embedders
            .first()
            .map(|embedder| embedder.model_id().to_string())
            .unwrap_or_default(),
        extractor_version: shared::EXTRACTOR_VERSION as i32,
    }
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: Uuid,
    pub name: String,
    pub cron: String,
    pub action: String,
    pub filter: Value,
    pub enabled: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    #[sqlx(skip)]
    pub next_fire_at: Option<DateTime<Utc>>,
    #[sqlx(skip)]
    pub last_fire: Option<Fire>,
}

async fn load_views(pool: &sqlx::PgPool, id: Option<Uuid>) -> sqlx::Result<Vec<ScheduleView>> {
    let mut views: Vec<ScheduleView> = sqlx::query_as(
        "SELECT id, name, cron, action, filter, enabled, created_by, created_at FROM schedules \
         WHERE ($1::uuid IS NULL OR id = $1) ORDER BY name",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let now = Utc::now();
    for view in &mut views {
        view.next_fire_at = scheduler::parse_cron(&view.cron)
            .ok()
            .filter(|_| view.enabled)
            .and_then(|cron| scheduler::next_tick(&cron, now));
        view.last_fire = sqlx::query_as(
            "SELECT schedule_id, fire_time, fired_at, manual, fired_by, affected FROM schedule_fires \
             WHERE schedule_id = $1 ORDER BY fired_at DESC LIMIT 1",
        )
        .bind(view.id)
        .fetch_optional(pool)
        .await?;
    }
    Ok(views)
}

/// Every schedule, by name.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// A fire made on request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FireMade {
    pub fire: Fire,
}

/// Every reprocessing schedule.
#[utoipa::path(get, path = "/v1/ops/schedules", tag = "ops",
    responses((status = 200, description = "Schedules", body = ScheduleList)))]
pub async fn list(
    State(state): State<AppState>,
    _operator: Operator,
) -> Result<ApiJson<ScheduleList>, ApiError> {
    Ok(ApiJson(ScheduleList {
        schedules: load_views(&state.pool, None).await?,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    pub name: String,
    pub cron: String,
    pub action: String,
    #[serde(default)]
    pub filter: Option<Value>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

fn enabled_by_default() -> bool {
    true
}

/// Creates a reprocessing schedule.
#[utoipa::path(post, path = "/v1/ops/schedules", tag = "ops", request_body = NewSchedule,
    responses((status = 201, description = "Created", body = ScheduleView),
              (status = 409, description = "The name is taken", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    operator: Operator,
    ApiJson(body): ApiJson<NewSchedule>,
) -> Result<(StatusCode, ApiJson<ScheduleView>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::invalid("name must be 1 to 100 characters"));
    }
    scheduler::parse_cron(&body.cron)
        .map_err(|message| ApiError::bad_request("invalid_cron", message))?;
    let action: Action = body
        .action
        .parse()
        .map_err(|message: String| ApiError::bad_request("invalid_action", message))?;
    let filter_value = body.filter.unwrap_or_else(|| json!({}));
    let filter: Filter = serde_json::from_value(filter_value.clone()).map_err(|error| {
        ApiError::invalid(format!("filter: {error}; it takes org_id and limit"))
    })?;
    filter.validate().map_err(ApiError::invalid)?;
    let id = Uuid::now_v7();
    let mut transaction = state.pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO schedules (id, name, cron, action, filter, enabled, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(id)
    .bind(name)
    .bind(body.cron.trim())
    .bind(action.as_str())
    .bind(serde_json::to_value(&filter).unwrap_or(filter_value))
    .bind(body.enabled)
    .bind(&operator.subject)
    .execute(&mut *transaction)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "duplicate_name",
            format!("a schedule named {name:?} exists"),
        ));
    }
    audit::record(
        &mut transaction,
        &operator.subject,
        "schedule.create",
        name,
        1,
        json!({ "schedule_id": id, "cron": body.cron.trim(), "action": action.as_str(), "filter": filter }),
    )
    .await?;
    transaction.commit().await?;
    let view = load_views(&state.pool, Some(id))
        .await?
        .into_iter()
        .next()
        .ok_or(ApiError::NotFound("schedule"))?;
    Ok((StatusCode::CREATED, ApiJson(view)))
}

/// Deletes a schedule.
#[utoipa::path(delete, path = "/v1/ops/schedules/{id}", tag = "ops", params(("id" = Uuid, Path, description = "The schedule's id")),
    responses((status = 204, description = "Deleted")))]
pub async fn remove(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut transaction = state.pool.begin().await?;
    let name: Option<String> =
        sqlx::query_scalar("DELETE FROM schedules WHERE id = $1 RETURNING name")
            .bind(id)
            .fetch_optional(&mut *transaction)
            .await?;
    let Some(name) = name else {
        return Err(ApiError::NotFound("schedule"));
    };
    audit::record(
        &mut transaction,
        &operator.subject,
        "schedule.remove",
        &name,
        1,
        json!({ "schedule_id": id }),
    )
    .await?;
    transaction.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fires a schedule now.
#[utoipa::path(post, path = "/v1/ops/schedules/{id}/run", tag = "ops", params(("id" = Uuid, Path, description = "The schedule's id")),
    responses((status = 200, description = "The fire", body = FireMade),
              (status = 409, description = "`already_fired` this millisecond", body = crate::error::ErrorBody)))]
pub async fn run_now(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<FireMade>, ApiError> {
    let statement = format!("{} WHERE s.id = $1", scheduler::SCHEDULE_ROW_SELECT);
    let schedule: ScheduleRow = sqlx::query_as(&statement)
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .ok_or(ApiError::NotFound("schedule"))?;
    let fire = scheduler::run_now(
        &state.pool,
        &schedule,
        &operator.subject,
        &action_context(&state),
    )
    .await?
    .ok_or_else(|| {
        ApiError::conflict(
            "already_fired",
            "this schedule fired this very millisecond; try again",
        )
    })?;
    Ok(ApiJson(FireMade { fire }))
}
