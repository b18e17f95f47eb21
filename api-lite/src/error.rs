//! The one error type of the API and its one JSON shape:
//! `{ "error": { "code": "...", "message": "..." } }`.
//!
//! Internal causes (SDK, SQL and embedder errors) are logged with the request's span, and
//! so its request id, and never sent to the caller: the caller gets a fixed message that
//! names at most the dependency that failed, and the `x-request-id` to quote.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A dependency a request needed, named to the caller when it is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    Database,
    Storage,
    Queue,
    Embedding,
}

impl Dependency {
    fn name(self) -> &'static str {
        match self {
            Self::Database => "the database",
            Self::Storage => "file storage",
            Self::Queue => "the job queue",
            Self::Embedding => "the embedding model",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    TooLarge(String),
    /// A dependency failed; `cause` goes to the logs only.
    #[error("{} is unavailable; try again shortly", .dependency.name())]
    Unavailable {
        dependency: Dependency,
        cause: String,
    },
    /// The caller's org went past a limit (its request rate, its live streams).
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after: Duration,
    },
    /// This replica is at a limit of its own (requests or streams in flight, a request
    /// that took too long).
    #[error("{message}")]
    Overloaded {
        code: &'static str,
        message: &'static str,
        retry_after: Duration,
    },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            code: "invalid_request",
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
        }
    }

    /// `dependency` failed with `cause` (logged, never returned).
    pub fn unavailable(dependency: Dependency, cause: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            dependency,
            cause: cause.to_string(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Invalid { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            Self::Overloaded { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, code),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyRequests { retry_after, .. } | Self::Overloaded { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::Unavailable { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            Self::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            Self::Unavailable { dependency, cause } => {
                tracing::warn!(dependency = ?dependency, error = %cause, "dependency unavailable")
            }
            Self::Overloaded { code, .. } => tracing::warn!(code, "request refused: overloaded"),
            _ => {}
        }
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        let mut response = (status, Json(body)).into_response();
        if let Some(retry_after) = self.retry_after() {
            // Whole seconds, rounded up: a client waiting that long finds room.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::unavailable(Dependency::Database, error)
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // A malformed id cannot name anything the caller owns.
        tracing::debug!(rejection = %rejection.body_text(), "bad path");
        Self::NotFound("resource")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid(rejection.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(error: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|value| value.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, retry_after, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn causes_stay_in_the_logs() {
        let (status, retry_after, body) = body_of(ApiError::unavailable(
            Dependency::Storage,
            "dispatch failure: io error: Connection refused (os error 111) at http://10.0.0.7:9000",
        ))
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(
            body,
            json!({ "error": { "code": "unavailable", "message": "file storage is unavailable; try again shortly" } })
        );
        let (status, _, body) = body_of(ApiError::from(sqlx::Error::Protocol(
            "relation \"files\" does not exist".into(),
        )))
        .await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["message"], "internal error");
    }

    #[tokio::test]
    async fn limits_say_when_to_come_back() {
        let (status, retry_after, body) = body_of(ApiError::TooManyRequests {
            code: "rate_limited",
            message: "slow down".into(),
            retry_after: Duration::from_millis(1200),
        })
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after.as_deref(), Some("2"));
        assert_eq!(body["error"]["code"], "rate_limited");
    }
}
