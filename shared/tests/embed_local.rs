//! The local all-MiniLM-L6-v2 embedder against sentence-transformers' own output.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shared::embed::{EmbedError, Embedder, LocalEngine, LocalMiniLm, LocalOptions, cosine};

fn model_dir() -> PathBuf {
    std::env::var_os("GLASSBOX_EMBEDDING__MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../.stack/models/all-MiniLM-L6-v2"
            ))
        })
}

fn reference_path() -> PathBuf {
    std::env::var_os("GLASSBOX_MINILM_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/fixtures/minilm-reference.json"
            ))
        })
}

#[derive(Deserialize)]
struct Reference {
    dims: usize,
    max_seq_length: usize,
    items: Vec<ReferenceItem>,
}

#[derive(Deserialize)]
struct ReferenceItem {
    text: String,
    embedding: Vec<f32>,
}

fn load_model() -> LocalMiniLm {
    load_with(LocalOptions::default())
}

fn load_with(options: LocalOptions) -> LocalMiniLm {
    let dir = model_dir();
    LocalMiniLm::load(&dir, options)
        .unwrap_or_else(|error| panic!("load model from {}: {error}", dir.display()))
}

fn engine_options(engine: LocalEngine) -> LocalOptions {
    LocalOptions {
        engine,
        ..LocalOptions::default()
    }
}

/// Every reference sentence must come out at cosine >= 0.999 to sentence-transformers.
async fn assert_matches_reference(model: &LocalMiniLm) {
    let reference_text = std::fs::read_to_string(reference_path()).expect("read reference");
    let reference: Reference = serde_json::from_str(&reference_text).expect("parse reference");
    assert_eq!(reference.max_seq_length, 256);
    assert_eq!(model.dimensions(), reference.dims);
    assert_eq!(model.model_id(), "all-minilm-l6-v2");

    let texts: Vec<String> = reference
        .items
        .iter()
        .map(|item| item.text.clone())
        .collect();
    let vectors = model.embed(&texts).await.expect("embed");
    assert_eq!(vectors.len(), texts.len());

    let mut min_cosine = f32::MAX;
    for (item, vector) in reference.items.iter().zip(&vectors) {
        let norm = vector.iter().map(|value| value * value).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
        let similarity = cosine(vector, &item.embedding);
        min_cosine = min_cosine.min(similarity);
        assert!(
            similarity >= 0.999,
            "{}: cosine {similarity} for {:?}",
            model.engine_name(),
            item.text.chars().take(60).collect::<String>()
        );
    }
    println!(
        "{}: min cosine against sentence-transformers over {} sentences: {min_cosine:.7}",
        model.engine_name(),
        texts.len()
    );
}

/// The engine the fleet runs with by default: ONNX Runtime, which scripts/stack.sh installs.
#[tokio::test]
async fn default_engine_is_onnxruntime_and_matches_sentence_transformers() {
    let model = load_model();
    assert!(
        model.engine_name().starts_with("onnxruntime"),
        "the default engine should be ONNX Runtime (installed by scripts/stack.sh), got {}",
        model.engine_name()
    );
    assert_matches_reference(&model).await;
}

#[tokio::test]
async fn candle_engine_matches_sentence_transformers() {
    let model = load_with(engine_options(LocalEngine::Candle));
    assert_eq!(model.engine_name(), "candle");
    assert_matches_reference(&model).await;
}

/// Texts from 1 to 300 words, so batches mix lengths, pad, and truncate at 256 tokens.
fn mixed_length_texts() -> Vec<String> {
    let vocabulary: Vec<&str> = "embeddings padding attention masks batch sorted tokens \
                                 vectors cosine encoder layer norm softmax queries keys values"
        .split_whitespace()
        .collect();
    [1, 300, 7, 2, 45, 120, 3, 60, 250, 11, 90, 5, 33, 180, 1, 17]
        .iter()
        .enumerate()
        .map(|(index, &count)| {
            (0..count)
                .map(|word| vocabulary[(word * 7 + index) % vocabulary.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Batches of mixed lengths (several batches, each padded to its longest text under a
/// tight token budget) give the same vector as each text embedded on its own.
async fn assert_batching_does_not_change_a_vector(engine: LocalEngine) {
    let texts = mixed_length_texts();
    let batched_model = load_with(LocalOptions {
        batch_size: 5,
        max_batch_tokens: 700,
        ..engine_options(engine)
    });
    let batched = batched_model.embed(&texts).await.expect("embed batch");
    assert_eq!(batched.len(), texts.len());
    let mut lowest = f32::MAX;
    for (text, batched_vector) in texts.iter().zip(&batched) {
        let alone = batched_model
            .embed(std::slice::from_ref(text))
            .await
            .expect("embed alone");
        let similarity = cosine(&alone[0], batched_vector);
        lowest = lowest.min(similarity);
        assert!(
            similarity > 0.99999,
            "{engine:?}: cosine {similarity} alone vs batched for a text of {} bytes",
            text.len()
        );
    }
    println!("{engine:?}: lowest cosine alone vs batched: {lowest:.7}");
}

#[tokio::test]
async fn onnxruntime_batches_of_mixed_lengths_match_one_text_at_a_time() {
    assert_batching_does_not_change_a_vector(LocalEngine::Onnxruntime).await;
}

#[tokio::test]
async fn candle_batches_of_mixed_lengths_match_one_text_at_a_time() {
    assert_batching_does_not_change_a_vector(LocalEngine::Candle).await;
}

/// Concurrent callers share the engine's batches; each still gets its own vectors, in order.
#[tokio::test]
async fn concurrent_callers_get_their_own_vectors_in_order() {
    let model = Arc::new(load_with(LocalOptions {
        batch_size: 4,
        ..LocalOptions::default()
    }));
    let texts = mixed_length_texts();
    let expected = model.embed(&texts).await.expect("embed all");
    let calls: Vec<_> = (0..4)
        .map(|caller| {
            let model = Arc::clone(&model);
            // Each caller takes every fourth text, from its own start, in reverse order.
            let mine: Vec<(usize, String)> = texts
                .iter()
                .cloned()
                .enumerate()
                .skip(caller)
                .step_by(4)
                .rev()
                .collect();
            tokio::spawn(async move {
                let only_texts: Vec<String> = mine.iter().map(|(_, text)| text.clone()).collect();
                let vectors = model.embed(&only_texts).await.expect("embed part");
                (mine, vectors)
            })
        })
        .collect();
    for call in calls {
        let (mine, vectors) = call.await.expect("caller task");
        assert_eq!(mine.len(), vectors.len());
        for ((index, _), vector) in mine.iter().zip(&vectors) {
            let similarity = cosine(vector, &expected[*index]);
            assert!(similarity > 0.99999, "text {index}: cosine {similarity}");
        }
    }
}

/// A caller that gives up (a cancelled job) leaves the engine working for the next one.
#[tokio::test]
async fn an_abandoned_call_does_not_stop_the_engine() {
    let model = load_with(LocalOptions {
        batch_size: 2,
        ..LocalOptions::default()
    });
    let texts = mixed_length_texts();
    let abandoned = tokio::time::timeout(Duration::from_millis(1), model.embed(&texts)).await;
    assert!(
        abandoned.is_err(),
        "the call should still be running after 1 ms"
    );
    let vectors = model
        .embed(&texts[..3])
        .await
        .expect("embed after an abandoned call");
    assert_eq!(vectors.len(), 3);
    let alone = model.embed(&texts[2..3]).await.expect("embed one");
    assert!(cosine(&alone[0], &vectors[2]) > 0.99999);
}

#[tokio::test]
async fn a_missing_onnxruntime_library_fails_when_required_and_falls_back_on_auto() {
    let missing = PathBuf::from("/nonexistent/libonnxruntime.so.1");
    let required = LocalMiniLm::load(
        &model_dir(),
        LocalOptions {
            engine: LocalEngine::Onnxruntime,
            onnxruntime_library: missing.clone(),
            ..LocalOptions::default()
        },
    );
    match required {
        Err(EmbedError::Permanent { code, message }) => {
            assert_eq!(code, "embedding_model_invalid");
            assert!(message.contains("ONNX Runtime"), "{message}");
        }
        Err(other) => panic!("expected a permanent error, got {other}"),
        Ok(_) => panic!("loading with a missing library should fail"),
    }
    let fallback = load_with(LocalOptions {
        engine: LocalEngine::Auto,
        onnxruntime_library: missing,
        ..LocalOptions::default()
    });
    assert_eq!(fallback.engine_name(), "candle");
    let vectors = fallback
        .embed(&["still works".to_owned()])
        .await
        .expect("embed with the fallback");
    assert_eq!(vectors[0].len(), 384);
}

#[tokio::test]
async fn empty_input_gives_empty_output() {
    let model = load_model();
    assert!(model.embed(&[]).await.expect("embed").is_empty());
}

#[tokio::test]
async fn tokenizer_counts_without_truncation() {
    let model = load_model();
    let long = "word ".repeat(1000);
    let encoding = model.tokenizer().encode(long, true).expect("encode");
    assert!(encoding.get_ids().len() > 1000);
}
