//! Text embeddings behind one trait.
//!
//! - [`LocalMiniLm`]: all-MiniLM-L6-v2 on the CPU (ONNX Runtime, or candle without it).
//! - [`OpenAiEmbedder`]: any OpenAI-compatible `/embeddings` endpoint.
//!
//! Every embedder takes any number of texts, batches internally, and returns one
//! L2-normalised vector per text, in input order. Errors carry the retry decision
//! ([`EmbedError::Transient`] or [`EmbedError::Permanent`]) for the queue layer.
//!
//! This module is self-contained on purpose: it uses only external crates, its own
//! submodules and the shared OpenAI-compatible HTTP client (`crate::openai_http`), so it
//! can be built and tested on its own.

use std::time::Duration;

use async_trait::async_trait;

/// Splitting work into batches and requests.
mod batch;
/// all-MiniLM-L6-v2 on the CPU: ONNX Runtime or candle behind one engine thread.
mod local;
/// OpenAI-compatible HTTP endpoints.
mod openai;

pub use local::{DEFAULT_ONNXRUNTIME_LIBRARY, LocalEngine, LocalMiniLm, LocalOptions};
pub use openai::{OpenAiEmbedder, OpenAiOptions};

/// Counter of embedding batches (local forward passes or remote requests), labelled by `model`.
pub const BATCHES_TOTAL: &str = "glassbox_embedding_batches_total";
/// Histogram of the wall time of one batch in seconds, labelled by `model`.
pub const BATCH_SECONDS: &str = "glassbox_embedding_batch_seconds";

/// Something that turns texts into vectors.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Stable id stored next to every vector, e.g. `all-minilm-l6-v2` or
    /// `openai:text-embedding-3-small@1536`. Vectors with different ids are not comparable.
    fn model_id(&self) -> &str;

    /// Length of every vector this embedder returns.
    fn dimensions(&self) -> usize;

    /// Embeds any number of texts, batching internally.
    ///
    /// Returns one L2-normalised vector of [`Self::dimensions`] floats per text, in input order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Why embedding failed, and whether trying again later may help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EmbedError {
    /// Worth retrying later: rate limits, server errors, network errors, exhausted retries.
    #[error("embedding failed, retry later: {message}")]
    Transient {
        message: String,
        /// The earliest sensible retry, when the server said so (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Retrying the same input will fail again: bad config, rejected input, broken model files.
    ///
    /// Codes: `embedding_rejected` (the endpoint answered 4xx other than 408/429),
    /// `embedding_invalid_response`, `embedding_config_invalid`, `embedding_model_invalid`,
    /// `embedding_tokenize_failed`, `embedding_inference_failed`.
    #[error("embedding failed ({code}): {message}")]
    Permanent { code: &'static str, message: String },
}

impl EmbedError {
    /// True when the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }

    pub(crate) fn permanent(code: &'static str, message: impl Into<String>) -> Self {
        Self::Permanent {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn transient(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::Transient {
            message: message.into(),
            retry_after,
        }
    }
}

/// Cosine similarity of two vectors; 0.0 when either is all zeros.
///
/// Only the common prefix is compared when the lengths differ (a caller bug; it is
/// not worth a panic on a hot path).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let mut dot = 0.0f32;
    let mut norm_a = 0.0f32;
    let mut norm_b = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    let denominator = norm_a.sqrt() * norm_b.sqrt();
    if denominator == 0.0 {
        return 0.0;
    }
    dot / denominator
}

/// Scales `vector` to unit length in place; an all-zero vector stays as it is.
pub(crate) fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
    // Guards against dividing by zero, like sentence-transformers' `clamp(min=1e-12)`.
    if norm > 1e-12 {
        for value in vector.iter_mut() {
            *value /= norm;
        }
    }
}

/// Records one finished batch in the shared embedding metrics.
pub(crate) fn record_batch(model_id: &str, elapsed: Duration) {
    let model = model_id.to_owned();
    metrics::counter!(BATCHES_TOTAL, "model" => model.clone()).increment(1);
    metrics::histogram!(BATCH_SECONDS, "model" => model).record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 3.0]).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let mut vector = vec![3.0, 4.0];
        l2_normalize(&mut vector);
        assert_eq!(vector, vec![0.6, 0.8]);
        let mut zero = vec![0.0, 0.0];
        l2_normalize(&mut zero);
        assert_eq!(zero, vec![0.0, 0.0]);
    }

    #[test]
    fn transient_is_transient() {
        assert!(EmbedError::transient("x", None).is_transient());
        assert!(!EmbedError::permanent("embedding_rejected", "x").is_transient());
    }
}
