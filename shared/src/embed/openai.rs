//! Any OpenAI-compatible `POST {base_url}/embeddings` endpoint: OpenAI, Azure-compatible
//! proxies, vLLM, Ollama, TEI, LiteLLM.
//!
//! This talks to the endpoint with reqwest and the OpenAI JSON shape rather than
//! through async-openai. async-openai 0.28 hides the HTTP status and the
//! `Retry-After` header, and retries 5xx and 429 itself for up to 15 minutes with the
//! unmaintained `backoff` crate; we need the status to tell permanent from transient
//! failures, and one retry policy (backon) that we control.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::{Deserialize, Serialize};

use super::batch::request_ranges;
use super::{EmbedError, Embedder, l2_normalize, record_batch};

/// Settings of [`OpenAiEmbedder`].
#[derive(Clone)]
pub struct OpenAiOptions {
    /// API root without `/embeddings`, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set; local servers often need none.
    pub api_key: Option<String>,
    /// Model name as the server knows it, e.g. `text-embedding-3-small`.
    pub model: String,
    /// Sent as `dimensions` when set (shortened text-embedding-3 vectors). Also what
    /// [`Embedder::dimensions`] reports; required unless `model` is a known OpenAI model.
    pub dimensions: Option<usize>,
    /// Texts per request. Default 256: OpenAI allows 2048, but smaller requests
    /// retry cheaper and suit self-hosted servers with lower limits.
    pub max_inputs_per_request: usize,
    /// Estimated tokens per request, counted as bytes / 3 (see `batch::estimate_tokens`).
    /// Default 131,056 (16 × 8191, OpenAI's per-input limit): well under OpenAI's
    /// 300,000 tokens per request even when the estimate is off.
    pub max_tokens_per_request: usize,
    /// Retries of one request after 429, 5xx, 408 or a network error. Default 5.
    pub max_retries: usize,
    /// First retry delay; doubles each time, with jitter. Default 500 ms.
    pub initial_backoff: Duration,
    /// Longest delay between retries. A `Retry-After` longer than this ends the
    /// retries early with a transient error carrying it. Default 20 s.
    pub max_backoff: Duration,
    /// Time limit of one HTTP request. Default 60 s.
    pub request_timeout: Duration,
}

impl Default for OpenAiOptions {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".to_owned(),
            api_key: None,
            model: "text-embedding-3-small".to_owned(),
            dimensions: None,
            max_inputs_per_request: 256,
            max_tokens_per_request: 16 * 8191,
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            request_timeout: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for OpenAiOptions {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("OpenAiOptions")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .field("max_inputs_per_request", &self.max_inputs_per_request)
            .field("max_tokens_per_request", &self.max_tokens_per_request)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Native vector length of OpenAI's embedding models, for when `dimensions` is unset.
fn known_dimensions(model: &str) -> Option<usize> {
    match model {
        "text-embedding-3-small" | "text-embedding-ada-002" => Some(1536),
        "text-embedding-3-large" => Some(3072),
        _ => None,
    }
}

/// Embeddings from an OpenAI-compatible endpoint, with request splitting and retries.
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    endpoint: String,
    options: OpenAiOptions,
    dimensions: usize,
    model_id: String,
}

impl OpenAiEmbedder {
    /// Builds the embedder; fails when the vector length is unknown (set
    /// `dimensions` for models other than OpenAI's) or the HTTP client cannot start.
    pub fn new(options: OpenAiOptions) -> Result<Self, EmbedError> {
        let Some(dimensions) = options
            .dimensions
            .or_else(|| known_dimensions(&options.model))
        else {
            return Err(EmbedError::permanent(
                "embedding_config_invalid",
                format!(
                    "set the dimensions of embedding model {:?}: it is not a known OpenAI model",
                    options.model
                ),
            ));
        };
        let http = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .build()
            .map_err(|error| {
                EmbedError::permanent(
                    "embedding_config_invalid",
                    format!("cannot build the http client: {error}"),
                )
            })?;
        let endpoint = format!("{}/embeddings", options.base_url.trim_end_matches('/'));
        let model_id = format!("openai:{}@{dimensions}", options.model);
        Ok(Self {
            http,
            endpoint,
            options,
            dimensions,
            model_id,
        })
    }

    /// Sends one request with retries; returns unit vectors in input order.
    async fn embed_request(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.options.initial_backoff)
            .with_max_delay(self.options.max_backoff)
            .with_max_times(self.options.max_retries)
            .with_jitter();
        let max_backoff = self.options.max_backoff;
        let mut attempts = 0usize;

        let result = (|| {
            attempts += 1;
            self.send_once(inputs)
        })
        .retry(backoff)
        .when(|error: &AttemptError| error.is_retryable())
        .adjust(|error, next_delay| {
            let next_delay = next_delay?;
            match error.retry_after() {
                // Waiting that long here would hold the job; let the queue wait instead.
                Some(retry_after) if retry_after > max_backoff => None,
                Some(retry_after) => Some(retry_after.max(next_delay)),
                None => Some(next_delay),
            }
        })
        .notify(|error, delay| {
            tracing::warn!(
                model = %self.model_id,
                delay_ms = delay.as_millis() as u64,
                error = %error.message(),
                "embedding request failed, retrying"
            );
        })
        .await;

        result.map_err(|error| match error {
            AttemptError::Fatal(error) => error,
            AttemptError::Retryable {
                message,
                retry_after,
            } => EmbedError::transient(
                format!("embedding request failed after {attempts} attempts: {message}"),
                retry_after,
            ),
        })
    }

    async fn send_once(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, AttemptError> {
        let body = EmbeddingRequest {
            model: &self.options.model,
            input: inputs,
            encoding_format: "float",
            dimensions: self.options.dimensions,
        };
        let mut request = self.http.post(&self.endpoint).json(&body);
        if let Some(api_key) = &self.options.api_key {
            request = request.bearer_auth(api_key);
        }

        let response = request.send().await.map_err(|error| {
            AttemptError::retryable(format!("request to {} failed: {error}", self.endpoint))
        })?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let bytes = response.bytes().await.map_err(|error| {
            AttemptError::retryable(format!("reading the response failed: {error}"))
        })?;

        if !status.is_success() {
            let message = format!("{status}: {}", body_excerpt(&bytes));
            let retryable = status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
                || status.is_server_error();
            if retryable {
                return Err(AttemptError::Retryable {
                    message,
                    retry_after,
                });
            }
            return Err(AttemptError::Fatal(EmbedError::permanent(
                "embedding_rejected",
                message,
            )));
        }

        let parsed: EmbeddingResponse = serde_json::from_slice(&bytes).map_err(|error| {
            invalid_response(format!("cannot parse the response body: {error}"))
        })?;
        self.ordered_vectors(parsed, inputs.len())
            .map_err(AttemptError::Fatal)
    }

    /// Orders vectors by their `index`, checks count and length, and normalises them.
    fn ordered_vectors(
        &self,
        response: EmbeddingResponse,
        expected: usize,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if response.data.len() != expected {
            return Err(EmbedError::permanent(
                "embedding_invalid_response",
                format!(
                    "asked for {expected} embeddings, got {}",
                    response.data.len()
                ),
            ));
        }
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
        for item in response.data {
            if item.embedding.len() != self.dimensions {
                return Err(EmbedError::permanent(
                    "embedding_invalid_response",
                    format!(
                        "expected {} dimensions, got {}",
                        self.dimensions,
                        item.embedding.len()
                    ),
                ));
            }
            let Some(slot) = vectors.get_mut(item.index) else {
                return Err(EmbedError::permanent(
                    "embedding_invalid_response",
                    format!("embedding index {} out of range", item.index),
                ));
            };
            let mut vector = item.embedding;
            l2_normalize(&mut vector);
            *slot = Some(vector);
        }
        vectors
            .into_iter()
            .map(|vector| {
                vector.ok_or_else(|| {
                    EmbedError::permanent("embedding_invalid_response", "duplicate embedding index")
                })
            })
            .collect()
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ranges: Vec<Range<usize>> = request_ranges(
            texts,
            self.options.max_inputs_per_request,
            self.options.max_tokens_per_request,
        );
        let mut vectors = Vec::with_capacity(texts.len());
        for range in ranges {
            let started = Instant::now();
            let batch_vectors = self.embed_request(&texts[range]).await?;
            record_batch(&self.model_id, started.elapsed());
            vectors.extend(batch_vectors);
        }
        Ok(vectors)
    }
}

/// Outcome of one failed HTTP attempt, before the retry policy has its say.
#[derive(Debug)]
enum AttemptError {
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    Fatal(EmbedError),
}

impl AttemptError {
    fn retryable(message: String) -> Self {
        Self::Retryable {
            message,
            retry_after: None,
        }
    }

    fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retryable { retry_after, .. } => *retry_after,
            Self::Fatal(_) => None,
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Retryable { message, .. } => message.clone(),
            Self::Fatal(error) => error.to_string(),
        }
    }
}

fn invalid_response(message: String) -> AttemptError {
    AttemptError::Fatal(EmbedError::permanent("embedding_invalid_response", message))
}

/// Reads `retry-after-ms` (OpenAI) or `Retry-After` in seconds. HTTP dates are ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header_text = |name| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(millis) = header_text("retry-after-ms").and_then(|text| text.trim().parse().ok()) {
        return Some(Duration::from_millis(millis));
    }
    let seconds: f64 = header_text(RETRY_AFTER.as_str())?.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// The start of an error body, for messages and logs.
fn body_excerpt(bytes: &[u8]) -> String {
    const LIMIT: usize = 500;
    let lossy = String::from_utf8_lossy(bytes);
    let text = lossy.trim();
    match text.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[derive(Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
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
    fn unknown_model_needs_dimensions() {
        let options = OpenAiOptions {
            model: "nomic-embed-text".to_owned(),
            ..OpenAiOptions::default()
        };
        let error = OpenAiEmbedder::new(options.clone()).err();
        assert!(matches!(
            error,
            Some(EmbedError::Permanent {
                code: "embedding_config_invalid",
                ..
            })
        ));
        let embedder = OpenAiEmbedder::new(OpenAiOptions {
            dimensions: Some(768),
            ..options
        })
        .expect("embedder");
        assert_eq!(embedder.model_id(), "openai:nomic-embed-text@768");
        assert_eq!(embedder.dimensions(), 768);
    }

    #[test]
    fn debug_hides_the_api_key() {
        let options = OpenAiOptions {
            api_key: Some("sk-secret".to_owned()),
            ..OpenAiOptions::default()
        };
        assert!(!format!("{options:?}").contains("sk-secret"));
    }
}
