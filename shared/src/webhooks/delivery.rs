//! The dispatcher: sends due deliveries, signed, and schedules retries.
//!
//! Each pass claims up to `concurrency` due deliveries with `FOR UPDATE SKIP LOCKED`
//! (so replicas share the table) by pushing their next attempt past the attempt's
//! timeout, commits, sends them at once, then records each outcome: a 2xx answer marks
//! the delivery delivered; anything else (another status, a timeout, a refused
//! connection or address) schedules the next attempt after an exponential backoff with
//! jitter, or marks it failed once the retry window has passed. A replica that dies
//! mid-attempt leaves the claim to run out, and the delivery is tried again.
//!
//! The client follows no redirects (a 3xx is a failed attempt), uses no proxy, resolves
//! through [`GuardedResolver`], gives up after the timeout and reads at most
//! `max_response_bytes` of an answer.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::signing;
use super::target::{self, GuardedResolver, TargetPolicy};
use crate::config::WebhookSettings;

/// How much of a receiver's answer or error goes into `last_error`.
const ERROR_CHARS: usize = 500;

/// Sends due webhook deliveries until shut down.
pub struct Dispatcher {
    pool: PgPool,
    client: reqwest::Client,
    settings: WebhookSettings,
    policy: TargetPolicy,
}

#[derive(Debug, sqlx::FromRow)]
struct Due {
    id: i64,
    event_id: String,
    payload: Value,
    attempts: i32,
    window_started_at: DateTime<Utc>,
    url: String,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_live: bool,
    endpoint_id: Uuid,
}

/// How one attempt went.
#[derive(Debug)]
struct Attempt {
    status_code: Option<u16>,
    error: Option<String>,
}

impl Attempt {
    fn delivered(&self) -> bool {
        self.error.is_none()
            && self
                .status_code
                .is_some_and(|code| (200..300).contains(&code))
    }
}

impl Dispatcher {
    pub fn new(pool: PgPool, settings: &WebhookSettings) -> reqwest::Result<Self> {
        let policy = TargetPolicy::from_settings(settings);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_millis(settings.timeout_ms.max(1)))
            .connect_timeout(Duration::from_millis(settings.timeout_ms.max(1)))
            .dns_resolver(std::sync::Arc::new(GuardedResolver(policy)))
            .user_agent("GlassBox-Webhooks/1")
            .build()?;
        Ok(Self {
            pool,
            client,
            settings: settings.clone(),
            policy,
        })
    }

    /// Delivers until `shutdown`, woken by NOTIFY and by a poll as a fallback.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(self.settings.poll_ms.max(10));
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut listener) => match listener.listen(super::CHANNEL).await {
                Ok(()) => Some(listener),
                Err(error) => {
                    tracing::warn!(%error, "webhook listen failed; polling only");
                    None
                }
            },
            Err(error) => {
                tracing::warn!(%error, "webhook listener failed to connect; polling only");
                None
            }
        };
        while !shutdown.is_cancelled() {
            let busy = match self.deliver_due().await {
                Ok(sent) => sent > 0,
                Err(error) => {
                    tracing::warn!(%error, "webhook pass failed; retrying");
                    false
                }
            };
            if busy {
                continue;
            }
            let wake = async {
                match listener.as_mut() {
                    Some(listener) => {
                        if let Ok(Err(error)) = tokio::time::timeout(poll, listener.recv()).await {
                            tracing::debug!(%error, "webhook listener lost its connection");
                            tokio::time::sleep(poll).await;
                        }
                    }
                    None => tokio::time::sleep(poll).await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake => {}
            }
        }
    }

    /// One pass: claims the due deliveries, sends them, records the outcomes. Returns
    /// how many were attempted.
    pub async fn deliver_due(&self) -> sqlx::Result<usize> {
        // The claim outlasts the attempt, so no other replica takes it meanwhile.
        let claim_secs = (self.settings.timeout_ms as f64 / 1000.0) * 2.0 + 5.0;
        let due: Vec<Due> = sqlx::query_as(
            "WITH due AS (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now() \
                          ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2) \
             FROM due, webhook_endpoints e WHERE d.id = due.id AND e.id = d.endpoint_id \
             RETURNING d.id, d.event_id, d.payload, d.attempts, d.window_started_at, e.url, e.secret, e.previous_secret, \
                       coalesce(e.previous_secret_expires_at > now(), false) AS previous_secret_live, e.id AS endpoint_id",
        )
        .bind(self.settings.concurrency.max(1) as i64)
        .bind(claim_secs)
        .fetch_all(&self.pool)
        .await?;
        let count = due.len();
        let attempts =
            futures::future::join_all(due.iter().map(|delivery| self.attempt(delivery))).await;
        for (delivery, attempt) in due.iter().zip(attempts) {
            self.record(delivery, &attempt).await?;
        }
        Ok(count)
    }

    async fn attempt(&self, delivery: &Due) -> Attempt {
        let failed = |error: String| Attempt {
            status_code: None,
            error: Some(error),
        };
        // The form and any IP literal again (names are checked by the resolver).
        let url = match target::check_url(&delivery.url, self.policy) {
            Ok(url) => url,
            Err(error) => return failed(error.to_string()),
        };
        let body = delivery.payload.to_string();
        let timestamp = Utc::now().timestamp();
        let mut secrets = vec![delivery.secret.as_str()];
        if let (Some(previous), true) = (&delivery.previous_secret, delivery.previous_secret_live) {
            secrets.push(previous.as_str());
        }
        let signature = match signing::signature_header(
            &secrets,
            &delivery.event_id,
            timestamp,
            body.as_bytes(),
        ) {
            Ok(signature) => signature,
            Err(error) => return failed(error.to_string()),
        };
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return failed(describe(&error)),
        };
        let status = response.status().as_u16();
        // Read a bounded part of the answer, for the record; the rest is dropped.
        let mut answer = Vec::new();
        while answer.len() < self.settings.max_response_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                _ => break,
            }
        }
        answer.truncate(self.settings.max_response_bytes);
        let error = (!(200..300).contains(&status)).then(|| {
            let text = String::from_utf8_lossy(&answer);
            format!(
                "answered {status}: {}",
                text.chars().take(ERROR_CHARS).collect::<String>()
            )
        });
        Attempt {
            status_code: Some(status),
            error,
        }
    }

    async fn record(&self, delivery: &Due, attempt: &Attempt) -> sqlx::Result<()> {
        let status_code = attempt.status_code.map(i32::from);
        if attempt.delivered() {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', delivered_at = now(), last_status_code = $2, last_error = NULL WHERE id = $1",
            )
            .bind(delivery.id)
            .bind(status_code)
            .execute(&self.pool)
            .await?;
            metrics::counter!(crate::metrics::WEBHOOK_ATTEMPTS, "outcome" => "delivered")
                .increment(1);
            tracing::info!(delivery_id = delivery.id, event_id = %delivery.event_id, endpoint_id = %delivery.endpoint_id, attempts = delivery.attempts, "webhook delivered");
            return Ok(());
        }
        let delay = self.backoff(delivery.attempts);
        let window =
            chrono::Duration::from_std(Duration::from_secs(self.settings.retry_window_secs))
                .unwrap_or(chrono::Duration::MAX);
        let next = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let error: String = attempt
            .error
            .clone()
            .unwrap_or_default()
            .chars()
            .take(ERROR_CHARS)
            .collect();
        let window_over = delivery
            .window_started_at
            .checked_add_signed(window)
            .is_some_and(|window_end| next > window_end);
        if window_over {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', failed_at = now(), last_status_code = $2, last_error = $3 WHERE id = $1",
            )
            .bind(delivery.id)
            .bind(status_code)
            .bind(&error)
            .execute(&self.pool)
            .await?;
            metrics::counter!(crate::metrics::WEBHOOK_ATTEMPTS, "outcome" => "failed").increment(1);
            tracing::warn!(delivery_id = delivery.id, event_id = %delivery.event_id, endpoint_id = %delivery.endpoint_id, attempts = delivery.attempts, %error, "webhook failed: retry window over");
        } else {
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = $2, last_status_code = $3, last_error = $4 WHERE id = $1",
            )
            .bind(delivery.id)
            .bind(next)
            .bind(status_code)
            .bind(&error)
            .execute(&self.pool)
            .await?;
            metrics::counter!(crate::metrics::WEBHOOK_ATTEMPTS, "outcome" => "retrying")
                .increment(1);
            tracing::info!(delivery_id = delivery.id, event_id = %delivery.event_id, attempts = delivery.attempts, retry_in_ms = delay.as_millis() as u64, %error, "webhook attempt failed; will retry");
        }
        Ok(())
    }

    /// The delay after the `attempts`-th failed attempt: the first retry delay doubled
    /// per attempt, capped, then drawn between half and all of it (jitter).
    fn backoff(&self, attempts: i32) -> Duration {
        backoff(&self.settings, attempts, rand::thread_rng().r#gen::<f64>())
    }
}

/// See [`Dispatcher::backoff`]; `draw` is in `[0, 1)`.
pub fn backoff(settings: &WebhookSettings, attempts: i32, draw: f64) -> Duration {
    let exponent = attempts.saturating_sub(1).clamp(0, 30) as u32;
    let full = Duration::from_millis(settings.first_retry_ms)
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(Duration::from_secs(settings.max_retry_delay_secs));
    full.mul_f64(0.5 + 0.5 * draw.clamp(0.0, 1.0))
}

/// A transport error without the request's URL (it is in the delivery already).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_redirect() {
        "redirected"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(error);
    let mut detail = String::new();
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let settings = WebhookSettings {
            first_retry_ms: 1000,
            max_retry_delay_secs: 60,
            ..WebhookSettings::default()
        };
        assert_eq!(backoff(&settings, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(&settings, 2, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(&settings, 4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(&settings, 40, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(&settings, 4, 0.0), Duration::from_secs(4));
        let defaults = WebhookSettings::default();
        // The default schedule keeps retrying for the whole day-long window.
        let mut total = Duration::ZERO;
        let mut attempts = 0;
        while total < Duration::from_secs(defaults.retry_window_secs) {
            attempts += 1;
            total += backoff(&defaults, attempts, 0.5);
        }
        assert!((20..60).contains(&attempts), "{attempts} attempts in a day");
    }
}
