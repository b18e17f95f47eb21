//! Loads the embedding model's `tokenizer.json` in milliseconds instead of about 150 ms of CPU.
//!
//! Every extraction child loads the tokenizer once, so its load time is paid per file.
//! `Tokenizer::from_file` reads the model section through serde's untagged and flattened
//! enums, which buffer the 30,522-entry WordPiece vocabulary twice (once as serde content, once as
//! a `serde_json::Value` map) before building it. Here the vocabulary goes straight into the map
//! the WordPiece model keeps, and the small parts (normalizer, pre-tokenizer, post-processor,
//! decoder, added tokens) still go through the tokenizers crate's own deserializers, so the
//! tokenizer is the same one `Tokenizer::from_file` builds. A file whose model is not WordPiece is
//! loaded the ordinary way.

use std::path::Path;

use ahash::AHashMap;
use serde::Deserialize;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{AddedToken, Tokenizer};

/// The fields of `tokenizer.json` the chunker needs; `truncation` and `padding` are ignored (the
/// chunker turns both off).
#[derive(Deserialize)]
struct TokenizerFile {
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    normalizer: Option<NormalizerWrapper>,
    pre_tokenizer: Option<PreTokenizerWrapper>,
    post_processor: Option<PostProcessorWrapper>,
    decoder: Option<DecoderWrapper>,
    model: ModelSection,
}

/// A plain struct, not an internally tagged enum: serde would buffer the whole vocabulary to find
/// the tag.
#[derive(Deserialize)]
struct ModelSection {
    #[serde(rename = "type")]
    kind: Option<String>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    max_input_chars_per_word: Option<usize>,
    vocab: AHashMap<String, u32>,
}

/// The tokenizer in `path`, read quickly when its model is WordPiece, else by `Tokenizer::from_file`.
pub fn load(path: &Path) -> Result<Tokenizer, String> {
    let bytes = std::fs::read(path).map_err(|error| error.to_string())?;
    match wordpiece_from_bytes(&bytes) {
        Some(tokenizer) => Ok(tokenizer),
        None => Tokenizer::from_bytes(&bytes).map_err(|error| error.to_string()),
    }
}

/// `None` when the file is not a WordPiece tokenizer this reader understands (the caller falls back).
pub fn wordpiece_from_bytes(bytes: &[u8]) -> Option<Tokenizer> {
    let file: TokenizerFile = serde_json::from_slice(bytes).ok()?;
    if file
        .model
        .kind
        .as_deref()
        .is_some_and(|kind| kind != "WordPiece")
    {
        return None;
    }
    let mut builder = WordPiece::builder().vocab(file.model.vocab);
    if let Some(unk_token) = file.model.unk_token {
        builder = builder.unk_token(unk_token);
    }
    if let Some(prefix) = file.model.continuing_subword_prefix {
        builder = builder.continuing_subword_prefix(prefix);
    }
    if let Some(max_chars) = file.model.max_input_chars_per_word {
        builder = builder.max_input_chars_per_word(max_chars);
    }
    let mut tokenizer = Tokenizer::new(builder.build().ok()?);
    tokenizer
        .with_normalizer(file.normalizer)
        .with_pre_tokenizer(file.pre_tokenizer)
        .with_post_processor(file.post_processor)
        .with_decoder(file.decoder);
    // As `Tokenizer::from_file` does: every added token, each with its own `special` flag.
    tokenizer.add_tokens(&file.added_tokens);
    Some(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accents, CJK, punctuation, a special token in the text, a word over 100 characters, control
    /// characters, emoji and mixed scripts: every path of the BERT normalizer and WordPiece.
    const TRICKY: &str = "Café naïve résumé — «quoted» [CLS] and [SEP] inside text. 東京は日本の首都です。 \
        Ünïcödé ligature ﬁ and soft\u{ad}hyphen, tabs\tand\u{7}bells, emoji 😀👍🏽, \
        Здравствуйте мир, عربي, \
        supercalifragilisticexpialidocioussupercalifragilisticexpialidocioussupercalifragilisticexpialidocious!! \
        x=3.14; f(a,b) -> {c: [1, 2]} #hash @at 100% $5 & more...";

    #[test]
    fn the_fast_load_builds_the_same_tokenizer_as_from_file() {
        let path = testkit::model_dir().join("tokenizer.json");
        let mut reference = Tokenizer::from_file(&path).expect("tokenizer.json loads");
        // The shipped file pads and truncates to 128; the fast load ignores both, as the chunker does.
        reference.with_padding(None);
        reference.with_truncation(None).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let fast = wordpiece_from_bytes(&bytes).expect("the model's tokenizer is WordPiece");
        for add_special_tokens in [false, true] {
            let expected = reference.encode(TRICKY, add_special_tokens).unwrap();
            let found = fast.encode(TRICKY, add_special_tokens).unwrap();
            assert_eq!(found.get_ids(), expected.get_ids());
            assert_eq!(found.get_offsets(), expected.get_offsets());
            assert_eq!(found.get_tokens(), expected.get_tokens());
        }
        assert_eq!(fast.get_vocab_size(true), reference.get_vocab_size(true));
        assert_eq!(fast.token_to_id("[CLS]"), reference.token_to_id("[CLS]"));
        let ids = reference.encode(TRICKY, false).unwrap().get_ids().to_vec();
        assert_eq!(
            fast.decode(&ids, true).unwrap(),
            reference.decode(&ids, true).unwrap()
        );
    }

    #[test]
    fn other_models_fall_back_and_broken_files_are_errors() {
        let folder = tempfile::tempdir().unwrap();
        let word_level = folder.path().join("word-level.json");
        std::fs::write(
            &word_level,
            r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1},"unk_token":"[UNK]"}}"#,
        )
        .unwrap();
        let tokenizer = load(&word_level).expect("a WordLevel tokenizer loads the ordinary way");
        assert_eq!(
            tokenizer.encode("hello there", false).unwrap().get_ids(),
            [1, 0]
        );
        let broken = folder.path().join("broken.json");
        std::fs::write(&broken, b"{\"model\": ").unwrap();
        assert!(load(&broken).is_err());
        assert!(load(&folder.path().join("missing.json")).is_err());
    }
}
