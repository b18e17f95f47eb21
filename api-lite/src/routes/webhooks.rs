//! Webhook endpoints of the caller's org: register (the signing secret is shown once),
//! list, show, delete, rotate the secret, and see recent deliveries. Events, signing and
//! delivery are `shared::webhooks`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::webhooks::target::{self, TargetError, TargetPolicy};
use shared::webhooks::{self, Delivery, Endpoint, EventType, signing};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are POSTed: http or https, a public address.
    pub url: String,
    /// `file.ready`, `file.failed`, `file.dead_lettered`, `execution.awaiting_input`,
    /// `execution.completed`, `execution.failed`, `execution.cancelled`.
    pub event_types: Vec<String>,
}

/// A new endpoint, or a rotated secret: the only answers that show a secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookWithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_...`: verify `webhook-signature` with it (Standard Webhooks). Shown once.
    pub secret: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<Endpoint>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
    /// 1 to 500 (50 by default).
    pub limit: Option<i64>,
}

fn check_event_types(names: &[String]) -> Result<Vec<&'static str>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::invalid(
            "event_types must name at least one event",
        ));
    }
    let mut events = Vec::new();
    for name in names {
        let event = EventType::from_name(name).ok_or_else(|| {
            ApiError::invalid(format!(
                "unknown event type {name:?}; use {}",
                EventType::names().join(", ")
            ))
        })?;
        if !events.contains(&event.as_str()) {
            events.push(event.as_str());
        }
    }
    Ok(events)
}

pub(crate) fn refused_target(error: TargetError) -> ApiError {
    ApiError::bad_request("webhook_target_refused", error.to_string())
}

/// Registers an endpoint for some of the org's events.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, description = "Registered; keep `secret`, it is not shown again", body = WebhookWithSecret),
              (status = 409, description = "`too_many_webhooks`", body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, ApiJson<WebhookWithSecret>), ApiError> {
    let events = check_event_types(&request.event_types)?;
    let policy = TargetPolicy::from_settings(&state.settings.webhooks);
    let url = target::check_url_resolved(request.url.trim(), policy)
        .await
        .map_err(refused_target)?;
    let limit = state.settings.webhooks.max_endpoints_per_org;
    if webhooks::count_endpoints(&state.pool, caller.org_id).await? >= limit {
        return Err(ApiError::conflict(
            "too_many_webhooks",
            format!("an org may register at most {limit} webhook endpoints"),
        ));
    }
    let secret = signing::new_secret();
    let endpoint =
        webhooks::create_endpoint(&state.pool, caller.org_id, url.as_str(), &events, &secret)
            .await?;
    tracing::info!(webhook_id = %endpoint.id, events = ?events, "webhook endpoint registered");
    Ok((
        StatusCode::CREATED,
        ApiJson(WebhookWithSecret { endpoint, secret }),
    ))
}

/// The org's endpoints (secrets are never listed).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "Endpoints", body = WebhookList)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<WebhookList>, ApiError> {
    Ok(ApiJson(WebhookList {
        webhooks: webhooks::list_endpoints(&state.pool, caller.org_id).await?,
    }))
}

/// One endpoint.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint", body = Endpoint)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<Endpoint>, ApiError> {
    webhooks::find_endpoint(&state.pool, caller.org_id, id)
        .await?
        .map(ApiJson)
        .ok_or(ApiError::NotFound("webhook"))
}

/// Deletes the endpoint and its deliveries.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    if !webhooks::delete_endpoint(&state.pool, caller.org_id, id).await? {
        return Err(ApiError::NotFound("webhook"));
    }
    tracing::info!(webhook_id = %id, "webhook endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces the signing secret. The old one keeps signing too (a second signature in
/// `webhook-signature`) until `previous_secret_expires_at`, so receivers can switch.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The new secret, shown once", body = WebhookWithSecret)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<WebhookWithSecret>, ApiError> {
    let secret = signing::new_secret();
    let grace = Duration::from_secs(state.settings.webhooks.secret_rotation_grace_secs);
    let endpoint = webhooks::rotate_secret(&state.pool, caller.org_id, id, &secret, grace)
        .await?
        .ok_or(ApiError::NotFound("webhook"))?;
    tracing::info!(webhook_id = %id, "webhook secret rotated");
    Ok(ApiJson(WebhookWithSecret { endpoint, secret }))
}

/// Recent deliveries to the endpoint, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id"), DeliveryQuery),
    responses((status = 200, description = "Deliveries", body = DeliveryList)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<ApiJson<DeliveryList>, ApiError> {
    let limit = super::list_limit(
        query.limit,
        query.status.as_deref(),
        &webhooks::DELIVERY_STATUSES,
    )?;
    if webhooks::find_endpoint(&state.pool, caller.org_id, id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound("webhook"));
    }
    Ok(ApiJson(DeliveryList {
        deliveries: webhooks::list_deliveries(
            &state.pool,
            Some(caller.org_id),
            Some(id),
            query.status.as_deref(),
            limit,
        )
        .await?,
    }))
}
