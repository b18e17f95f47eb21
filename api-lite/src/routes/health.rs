//! `/health` says the process is alive; `/ready` says its dependencies answer.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

pub async fn health() -> &'static str {
    "ok"
}

pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let limit = Duration::from_secs(3);
    let postgres = tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&state.pool)).await;
    let postgres = matches!(postgres, Ok(Ok(_)));
    let sqs = tokio::time::timeout(limit, state.file_queue.depth()).await;
    let sqs = matches!(sqs, Ok(Ok(_)));
    let s3 = tokio::time::timeout(
        limit,
        state
            .aws
            .s3
            .head_bucket()
            .bucket(&state.settings.storage.bucket)
            .send(),
    )
    .await;
    let s3 = matches!(s3, Ok(Ok(_)));
    let ready = postgres && sqs && s3;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": ready, "checks": { "postgres": postgres, "sqs": sqs, "s3": s3 } })),
    )
}
