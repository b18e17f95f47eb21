//! Webhook deliveries across orgs: the failed ones (retries ran out) and redelivery, which
//! puts one back to pending with a new retry window and the same event id. Audited.

use axum::extract::State;
use serde::Serialize;
use serde_json::json;
use shared::webhooks::{self, Delivery, Redelivery};

use crate::auth::Operator;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::ops::audit;
use crate::routes::webhooks::{DeliveryList, DeliveryQuery};
use crate::state::AppState;

/// A delivery put back on its way.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redelivered {
    pub delivery: Delivery,
}

/// Webhook deliveries of every org, newest first (failed ones by default).
#[utoipa::path(get, path = "/v1/ops/webhooks/deliveries", tag = "ops", params(DeliveryQuery),
    responses((status = 200, description = "Deliveries", body = DeliveryList)))]
pub async fn list(
    State(state): State<AppState>,
    _operator: Operator,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<ApiJson<DeliveryList>, ApiError> {
    let status = query.status.as_deref().unwrap_or("failed");
    let limit = crate::routes::list_limit(query.limit, Some(status), &webhooks::DELIVERY_STATUSES)?;
    Ok(ApiJson(DeliveryList {
        deliveries: webhooks::list_deliveries(&state.pool, None, None, Some(status), limit).await?,
    }))
}

/// Redelivers a failed delivery: pending again, a fresh retry window, the same `webhook-id`.
#[utoipa::path(post, path = "/v1/ops/webhooks/deliveries/{id}/redeliver", tag = "ops",
    params(("id" = i64, Path, description = "The delivery's id")),
    responses((status = 202, description = "On its way again", body = Redelivered),
              (status = 409, description = "`not_failed`: delivered already or still being retried", body = crate::error::ErrorBody)))]
pub async fn redeliver(
    State(state): State<AppState>,
    operator: Operator,
    ApiPath(id): ApiPath<i64>,
) -> Result<(axum::http::StatusCode, ApiJson<Redelivered>), ApiError> {
    let mut transaction = state.pool.begin().await?;
    let delivery = match webhooks::redeliver(&mut transaction, id).await? {
        Redelivery::Scheduled(delivery) => *delivery,
        Redelivery::NotFailed(status) => {
            return Err(ApiError::conflict(
                "not_failed",
                format!("the delivery is {status}; only a failed one is redelivered"),
            ));
        }
        Redelivery::NotFound => return Err(ApiError::NotFound("delivery")),
    };
    audit::record(
        &mut transaction,
        &operator.subject,
        "webhook.redeliver",
        &delivery.id.to_string(),
        1,
        json!({ "event_id": delivery.event_id, "endpoint_id": delivery.endpoint_id, "org_id": delivery.org_id }),
    )
    .await?;
    transaction.commit().await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        ApiJson(Redelivered { delivery }),
    ))
}
