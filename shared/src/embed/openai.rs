//! Any OpenAI-compatible `POST {base_url}/embeddings` endpoint: OpenAI, Azure-compatible
//! proxies, vLLM, Ollama, TEI, LiteLLM.
//!
//! The HTTP call and its retries are [`crate::openai_http`], shared with the agent's chat
//! client (which says why not async-openai); this module writes the request, splits the
//! texts into requests and checks the vectors that come back.

use std::fmt;
use std::ops::Range;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::openai_http::{CallError, HttpOptions, OpenAiHttp};

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
    http: OpenAiHttp,
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
        let http = OpenAiHttp::new(HttpOptions {
            base_url: options.base_url.clone(),
            api_key: options.api_key.clone(),
            request_timeout: options.request_timeout,
            max_retries: options.max_retries,
            initial_backoff: options.initial_backoff,
            max_backoff: options.max_backoff,
        })
        .map_err(|message| EmbedError::permanent("embedding_config_invalid", message))?;
        let model_id = format!("openai:{}@{dimensions}", options.model);
        Ok(Self {
            http,
            options,
            dimensions,
            model_id,
        })
    }

    /// Sends one request with retries; returns unit vectors in input order.
    async fn embed_request(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let body = EmbeddingRequest {
            model: &self.options.model,
            input: inputs,
            encoding_format: "float",
            dimensions: self.options.dimensions,
        };
        let answer = self
            .http
            .post_json("embeddings", &body, &self.model_id)
            .await
            .map_err(|error| match error {
                CallError::Unavailable {
                    message,
                    retry_after,
                    attempts,
                } => EmbedError::transient(
                    format!("embedding request failed after {attempts} attempts: {message}"),
                    retry_after,
                ),
                CallError::Rejected { message, .. } => {
                    EmbedError::permanent("embedding_rejected", message)
                }
            })?;
        let parsed: EmbeddingResponse = serde_json::from_slice(&answer.body).map_err(|error| {
            EmbedError::permanent(
                "embedding_invalid_response",
                format!("cannot parse the response body: {error}"),
            )
        })?;
        self.ordered_vectors(parsed, inputs.len())
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
