//! The local all-MiniLM-L6-v2 embedder against sentence-transformers' own output.

use std::path::PathBuf;

use serde::Deserialize;
use shared::embed::{Embedder, LocalMiniLm, LocalOptions, cosine};

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
    let dir = model_dir();
    LocalMiniLm::load(&dir, LocalOptions::default())
        .unwrap_or_else(|error| panic!("load model from {}: {error}", dir.display()))
}

#[tokio::test]
async fn matches_sentence_transformers_reference() {
    let reference_text = std::fs::read_to_string(reference_path()).expect("read reference");
    let reference: Reference = serde_json::from_str(&reference_text).expect("parse reference");
    assert_eq!(reference.max_seq_length, 256);
    let model = load_model();
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
            "cosine {similarity} for {:?}",
            item.text.chars().take(60).collect::<String>()
        );
    }
    println!("min cosine against sentence-transformers: {min_cosine:.7}");
}

#[tokio::test]
async fn batching_does_not_change_a_vector() {
    let model = load_model();
    let short = "The cat sat on the mat.".to_owned();
    let long = "A much longer sentence about embeddings, padding and attention masks. ".repeat(20);
    let alone = model
        .embed(std::slice::from_ref(&short))
        .await
        .expect("embed alone");
    let batched = model
        .embed(&[long.clone(), short.clone(), long])
        .await
        .expect("embed batch");
    let similarity = cosine(&alone[0], &batched[1]);
    println!("alone vs batched cosine: {similarity:.7}");
    assert!(similarity > 0.9999, "cosine {similarity}");
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
