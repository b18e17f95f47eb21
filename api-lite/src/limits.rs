//! Limits that keep one tenant from starving the others, and keep a replica standing.
//!
//! - [`OrgRateLimiter`]: a token bucket per org (a rate and a burst). The [`per_org`]
//!   middleware verifies the bearer token once (handlers reuse the claims), takes a
//!   token from the org's bucket and answers 429 `rate_limited` with `Retry-After` when
//!   the bucket is empty. Requests without a valid token pass on to be refused with 401.
//! - [`guard`]: tower's layers around every route: a concurrency limit shared by the
//!   whole router that sheds load (503 `overloaded`) instead of queueing without end, and
//!   a timeout (503 `timeout`). A live event stream counts until its headers are sent.
//!
//! The per-org burst stays well under the concurrency limit, so one org's flood is
//! refused with 429s before it can fill the replica for everyone else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::config::ApiSettings;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::timeout::TimeoutLayer;
use tower::{BoxError, ServiceBuilder};
use uuid::Uuid;

use crate::auth::bearer_token;
use crate::error::ApiError;
use crate::state::AppState;

/// Metric: requests refused by a limit, by `reason`.
pub const REFUSED: &str = "glassbox_http_refused_total";
/// Buckets kept before idle, full ones are forgotten.
const TRACKED_ORGS: usize = 10_000;

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// A token bucket per org, in memory (per replica: N replicas allow N times the rate).
pub struct OrgRateLimiter {
    rate_per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

impl OrgRateLimiter {
    /// A rate of 0 (or less) turns the limit off.
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        Self {
            rate_per_sec,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `org_id`'s bucket, or says how long until there is one.
    pub fn check(&self, org_id: Uuid) -> Result<(), Duration> {
        self.check_at(org_id, Instant::now())
    }

    fn check_at(&self, org_id: Uuid, now: Instant) -> Result<(), Duration> {
        if self.rate_per_sec <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("the buckets are never poisoned");
        if buckets.len() >= TRACKED_ORGS {
            let (rate, burst) = (self.rate_per_sec, self.burst);
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.refilled_at).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(org_id).or_insert(Bucket {
            tokens: self.burst,
            refilled_at: now,
        });
        let refill = now.duration_since(bucket.refilled_at).as_secs_f64() * self.rate_per_sec;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / self.rate_per_sec,
        ))
    }
}

/// Verifies the bearer token (leaving the claims for the handler) and applies the org's
/// rate limit.
pub async fn per_org(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let claims = bearer_token(request.headers()).and_then(|token| state.keys.verify(token));
    if let Some(claims) = claims {
        if let Err(retry_after) = state.rate_limiter.check(claims.org) {
            metrics::counter!(REFUSED, "reason" => "rate_limited").increment(1);
            tracing::info!(org_id = %claims.org, "request refused: org rate limit");
            return ApiError::TooManyRequests {
                code: "rate_limited",
                message: format!(
                    "this org makes more than {} requests a second; slow down",
                    state.settings.api.rate_limit_per_sec
                ),
                retry_after,
            }
            .into_response();
        }
        request.extensions_mut().insert(claims);
    }
    next.run(request).await
}

/// Wraps every route in the concurrency limit (shedding load) and the timeout.
pub fn guard(router: Router<AppState>, settings: &ApiSettings) -> Router<AppState> {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(refusal))
            .layer(TimeoutLayer::new(Duration::from_secs(
                settings.request_timeout_secs.max(1),
            )))
            .layer(LoadShedLayer::new())
            .layer(GlobalConcurrencyLimitLayer::new(
                settings.max_concurrent_requests.max(1),
            )),
    )
}

/// The API's answer when a tower layer refuses a request.
async fn refusal(error: BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        metrics::counter!(REFUSED, "reason" => "timeout").increment(1);
        return ApiError::Overloaded {
            code: "timeout",
            message: "the request took too long and was stopped; try again",
            retry_after: Duration::from_secs(1),
        };
    }
    if error.is::<tower::load_shed::error::Overloaded>() {
        metrics::counter!(REFUSED, "reason" => "overloaded").increment(1);
        return ApiError::Overloaded {
            code: "overloaded",
            message: "the API is serving as many requests as it can; try again shortly",
            retry_after: Duration::from_secs(1),
        };
    }
    ApiError::Internal(anyhow::anyhow!("middleware failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_org_gets_its_burst_then_its_rate() {
        let limiter = OrgRateLimiter::new(2.0, 3);
        let start = Instant::now();
        let busy = Uuid::now_v7();
        for _ in 0..3 {
            assert!(limiter.check_at(busy, start).is_ok());
        }
        let wait = limiter.check_at(busy, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Another org is not affected by the first one's burst.
        assert!(limiter.check_at(Uuid::now_v7(), start).is_ok());
        // Half a second later one more request fits, and only one.
        let later = start + Duration::from_millis(500);
        assert!(limiter.check_at(busy, later).is_ok());
        assert!(limiter.check_at(busy, later).is_err());
        // A long pause refills up to the burst, not beyond.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.check_at(busy, much_later).is_ok());
        }
        assert!(limiter.check_at(busy, much_later).is_err());
    }

    #[test]
    fn a_zero_rate_turns_the_limit_off() {
        let limiter = OrgRateLimiter::new(0.0, 1);
        let org = Uuid::now_v7();
        for _ in 0..100 {
            assert!(limiter.check(org).is_ok());
        }
    }
}
