//! `/health` says the process is alive; `/ready` says its dependencies answer.
//!
//! A readiness check makes three calls (Postgres, SQS, S3), so its answer is kept for a
//! second and callers in the meantime share it: a load balancer, or anyone else, polling
//! `/ready` cannot turn it into load on the dependencies.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::state::AppState;

/// How long a readiness answer is reused.
pub const READY_CACHE_FOR: Duration = Duration::from_secs(1);

/// The last readiness answer and when it was taken. The lock is held while a check runs,
/// so concurrent callers wait for that one check instead of starting their own.
#[derive(Default)]
pub struct ReadyCache(Mutex<Option<(Instant, Readiness)>>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub postgres: bool,
    pub sqs: bool,
    pub s3: bool,
}

impl Readiness {
    fn ready(self) -> bool {
        self.postgres && self.sqs && self.s3
    }
}

pub async fn health() -> &'static str {
    "ok"
}

pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let readiness = {
        let mut cached = state.ready_cache.0.lock().await;
        match *cached {
            Some((checked_at, readiness)) if checked_at.elapsed() < READY_CACHE_FOR => readiness,
            _ => {
                let readiness = check(&state).await;
                *cached = Some((Instant::now(), readiness));
                readiness
            }
        }
    };
    let status = if readiness.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": readiness.ready(),
            "checks": { "postgres": readiness.postgres, "sqs": readiness.sqs, "s3": readiness.s3 },
        })),
    )
}

async fn check(state: &AppState) -> Readiness {
    let limit = Duration::from_secs(3);
    let postgres = tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(&state.pool)).await;
    let sqs = tokio::time::timeout(limit, state.file_queue.depth()).await;
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
    Readiness {
        postgres: matches!(postgres, Ok(Ok(_))),
        sqs: matches!(sqs, Ok(Ok(_))),
        s3: matches!(s3, Ok(Ok(_))),
    }
}
