//! Builds the configured embedder, the tokenizer used for chunking, and each model's
//! partial HNSW index.

use std::sync::Arc;

use sqlx::PgPool;
use tokenizers::Tokenizer;

use crate::config::{EmbeddingProvider, EmbeddingSettings};
use crate::embed::{
    EmbedError, Embedder, LocalMiniLm, LocalOptions, OpenAiEmbedder, OpenAiOptions,
};

pub async fn from_settings(settings: &EmbeddingSettings) -> Result<Arc<dyn Embedder>, EmbedError> {
    match settings.provider {
        EmbeddingProvider::Local => {
            let model_dir = settings.model_dir.clone();
            let options = LocalOptions {
                batch_size: settings.batch_size,
                max_batch_tokens: settings.max_batch_tokens,
                engine: settings.engine,
                onnxruntime_library: settings.onnxruntime_library.clone(),
                threads: settings.threads,
            };
            let model = tokio::task::spawn_blocking(move || LocalMiniLm::load(&model_dir, options))
                .await
                .map_err(|error| EmbedError::Permanent {
                    code: "model_load",
                    message: error.to_string(),
                })??;
            Ok(Arc::new(model))
        }
        EmbeddingProvider::Openai => {
            use secrecy::ExposeSecret;
            Ok(Arc::new(OpenAiEmbedder::new(OpenAiOptions {
                base_url: settings.base_url.clone(),
                api_key: settings
                    .api_key
                    .as_ref()
                    .map(|key| key.expose_secret().to_string()),
                model: settings.model.clone(),
                dimensions: settings.dimensions,
                max_inputs_per_request: settings.max_inputs_per_request,
                max_tokens_per_request: settings.max_tokens_per_request,
                max_retries: settings.max_retries,
                request_timeout: std::time::Duration::from_secs(settings.request_timeout_secs),
                ..OpenAiOptions::default()
            })?))
        }
    }
}

/// The tokenizer chunk sizes are measured with: the local model's, whatever the provider.
pub fn chunk_tokenizer(settings: &EmbeddingSettings) -> Result<Tokenizer, String> {
    let path = settings.model_dir.join("tokenizer.json");
    let mut tokenizer = Tokenizer::from_file(&path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    // Chunk sizing counts all tokens; the model's own truncation must not hide any.
    tokenizer
        .with_truncation(None)
        .map_err(|error| error.to_string())?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Creates the partial HNSW index for the embedder's model when it is missing.
pub async fn ensure_index(pool: &PgPool, embedder: &dyn Embedder) -> sqlx::Result<()> {
    let model_id = embedder.model_id();
    let slug: String = model_id
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    let dimensions = embedder.dimensions();
    // The model id is ours (from config), but quote it as a literal all the same.
    let literal = model_id.replace('\'', "''");
    let statement = format!(
        "CREATE INDEX IF NOT EXISTS chunks_hnsw_{slug} ON chunks USING hnsw ((embedding::vector({dimensions})) vector_cosine_ops) WHERE model_id = '{literal}'"
    );
    sqlx::query(&statement).execute(pool).await?;
    Ok(())
}
