//! The HTTP side of every OpenAI-compatible client in the fleet (the embedder in
//! `embed::openai`, the agent's chat model in worker-agent's `llm`): one JSON POST with
//! bearer auth, a time limit, and one retry policy.
//!
//! Why not async-openai: it hides the HTTP status and `Retry-After`, and it retries 429
//! and 5xx on its own schedule; the fleet needs the status to tell a permanent failure
//! from a transient one, one retry policy it controls (backon), a `Retry-After` too long
//! to wait for handed back to the queue instead, and a request future it can drop the
//! moment a cancel arrives. The request and answer bodies are small JSON shapes each
//! client writes itself.
//!
//! - 429, 408, 5xx and network errors are retried with exponential backoff and jitter,
//!   waiting at least what `Retry-After` (or OpenAI's `retry-after-ms`) asks. A wait
//!   longer than `max_backoff` ends the retries at once: the caller's job waits on the
//!   queue instead of holding a worker.
//! - Any other non-2xx status is a rejection, never retried.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde::Serialize;

/// Where the endpoint is and how hard to try.
#[derive(Clone)]
pub struct HttpOptions {
    /// API root, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set; local servers often need none.
    pub api_key: Option<String>,
    /// Time limit of one HTTP request.
    pub request_timeout: Duration,
    /// Retries of one request after 429, 5xx, 408 or a network error.
    pub max_retries: usize,
    /// First retry delay; doubles each time, with jitter.
    pub initial_backoff: Duration,
    /// Longest delay between retries; a longer `Retry-After` ends the retries early.
    pub max_backoff: Duration,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HttpOptions")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish()
    }
}

/// Why a call did not get a 2xx answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// Retries ran out on 429, 408, 5xx or network errors, or the server asked for a wait
    /// longer than `max_backoff`: try again later.
    #[error("after {attempts} attempts: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
        attempts: u32,
    },
    /// The server refused the request (a 4xx other than 408 and 429).
    #[error("{message}")]
    Rejected { status: u16, message: String },
}

/// A 2xx answer's body and the requests it took.
#[derive(Debug, Clone)]
pub struct Answer {
    pub body: Bytes,
    /// Requests made, retries included.
    pub attempts: u32,
}

/// A JSON POST client for one OpenAI-compatible endpoint.
pub struct OpenAiHttp {
    http: reqwest::Client,
    options: HttpOptions,
}

impl OpenAiHttp {
    /// Fails only when the HTTP client cannot be built (TLS setup).
    pub fn new(options: HttpOptions) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .build()
            .map_err(|error| format!("cannot build the http client: {error}"))?;
        Ok(Self { http, options })
    }

    /// `{base_url}/{path}`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.options.base_url.trim_end_matches('/'))
    }

    /// POSTs `body` as JSON to `{base_url}/{path}`, retrying as the module docs say.
    /// `label` names the call in retry logs.
    pub async fn post_json<B: Serialize + Sync>(
        &self,
        path: &str,
        body: &B,
        label: &str,
    ) -> Result<Answer, CallError> {
        let body = serde_json::to_vec(body).map_err(|error| CallError::Rejected {
            status: 0,
            message: format!("cannot encode the request as JSON: {error}"),
        })?;
        self.post_json_bytes(path, Bytes::from(body), label).await
    }

    /// [`Self::post_json`] with a body the caller already wrote as JSON text (written
    /// once, not again at each retry).
    pub async fn post_json_bytes(
        &self,
        path: &str,
        body: Bytes,
        label: &str,
    ) -> Result<Answer, CallError> {
        let endpoint = self.endpoint(path);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.options.initial_backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.max_retries)
            .with_jitter();
        let max_backoff = self.options.max_backoff;
        let mut attempts = 0u32;
        let outcome = (|| {
            attempts += 1;
            self.send_once(&endpoint, body.clone())
        })
        .retry(backoff)
        .when(|error: &Attempt| matches!(error, Attempt::Retryable { .. }))
        .adjust(|error, next_delay| {
            let next_delay = next_delay?;
            match error {
                // Waiting that long here would hold the job; let the queue wait instead.
                Attempt::Retryable {
                    retry_after: Some(retry_after),
                    ..
                } if *retry_after > max_backoff => None,
                Attempt::Retryable {
                    retry_after: Some(retry_after),
                    ..
                } => Some((*retry_after).max(next_delay)),
                _ => Some(next_delay),
            }
        })
        .notify(|error, delay| {
            if let Attempt::Retryable { message, .. } = error {
                tracing::warn!(call = label, delay_ms = delay.as_millis() as u64, error = %message, "request failed, retrying");
            }
        })
        .await;
        match outcome {
            Ok(body) => Ok(Answer { body, attempts }),
            Err(Attempt::Retryable {
                message,
                retry_after,
            }) => Err(CallError::Unavailable {
                message,
                retry_after,
                attempts,
            }),
            Err(Attempt::Rejected(rejected)) => Err(rejected),
        }
    }

    async fn send_once(&self, endpoint: &str, body: Bytes) -> Result<Bytes, Attempt> {
        let mut request = self
            .http
            .post(endpoint)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(api_key) = &self.options.api_key {
            request = request.bearer_auth(api_key);
        }
        let response = request.send().await.map_err(|error| Attempt::Retryable {
            message: format!("request to {endpoint} failed: {error}"),
            retry_after: None,
        })?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(|error| Attempt::Retryable {
            message: format!("reading the answer failed: {error}"),
            retry_after: None,
        })?;
        if status.is_success() {
            return Ok(bytes);
        }
        let message = format!("{status}: {}", body_excerpt(&bytes));
        let retryable = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error();
        if retryable {
            return Err(Attempt::Retryable {
                message,
                retry_after,
            });
        }
        Err(Attempt::Rejected(CallError::Rejected {
            status: status.as_u16(),
            message,
        }))
    }
}

/// One failed attempt, before the retry policy has its say.
enum Attempt {
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    Rejected(CallError),
}

/// Reads `retry-after-ms` (OpenAI) or `Retry-After` in seconds. HTTP dates are ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header_text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(millis) = header_text("retry-after-ms").and_then(|text| text.trim().parse().ok()) {
        return Some(Duration::from_millis(millis));
    }
    let seconds: f64 = header_text(RETRY_AFTER.as_str())?.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// The start of a body, for error messages and logs.
pub fn body_excerpt(bytes: &[u8]) -> String {
    const LIMIT: usize = 500;
    let lossy = String::from_utf8_lossy(bytes);
    let text = lossy.trim();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_prefers_milliseconds_and_reads_seconds() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        let mut date_only = HeaderMap::new();
        date_only.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&date_only), None);
    }

    #[test]
    fn debug_hides_the_api_key() {
        let options = HttpOptions {
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: Some("sk-secret".into()),
            request_timeout: Duration::from_secs(1),
            max_retries: 0,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        assert!(!format!("{options:?}").contains("sk-secret"));
    }

    #[test]
    fn excerpts_are_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        let excerpt = body_excerpt(long.as_bytes());
        assert_eq!(excerpt.chars().count(), 501);
        assert!(excerpt.ends_with('…'));
    }
}
