//! BERT's uncased WordPiece on ASCII words, without the tokenizers crate's per-character
//! bookkeeping: the same token byte ranges, several times faster.
//!
//! The chunker needs only where each token lies. For all-MiniLM-L6-v2's tokenizer
//! (`BertNormalizer` with lowercasing, `BertPreTokenizer`, `WordPiece`), a run of printable
//! ASCII between ASCII spaces, tabs and line breaks is tokenized on its own: lowercasing
//! keeps every byte where it is, the pre-tokenizer splits it into runs of letters and
//! digits and single punctuation marks, and WordPiece takes the longest vocabulary piece
//! at each step (`##` before all but the first), or makes the whole pre-token one
//! `[UNK]` when a step finds none or it is longer than the model's word limit.
//!
//! Everything else goes to the tokenizers crate, one run at a time: a run with a byte
//! outside printable ASCII (accents, Unicode spaces and punctuation, CJK, control
//! characters the normalizer removes) or with the first byte of an added token (`[CLS]`).
//! A tokenizer of any other shape is never taken over ([`AsciiWordPiece::for_tokenizer`]).
//! `tests::the_same_ranges_as_the_tokenizers_crate` compares both over text of every kind.

use ahash::AHashSet;
use tokenizers::models::ModelWrapper;
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Model, Tokenizer};

/// The vocabulary split by position, and the rules of one BERT uncased tokenizer.
pub struct AsciiWordPiece {
    /// Pieces that start a word.
    starts: AHashSet<Box<str>>,
    /// Pieces that continue a word, without their prefix.
    continuations: AHashSet<Box<str>>,
    /// A pre-token of more characters is one `[UNK]`.
    max_chars: usize,
    /// First bytes of the added tokens (both cases): a run holding one is not ours.
    added_first_bytes: [bool; 128],
}

impl AsciiWordPiece {
    /// The fast path for `tokenizer`, when it is BERT's uncased pipeline; `None` otherwise.
    pub fn for_tokenizer(tokenizer: &Tokenizer) -> Option<Self> {
        match tokenizer.get_normalizer() {
            Some(NormalizerWrapper::BertNormalizer(normalizer)) if normalizer.lowercase => {}
            _ => return None,
        }
        if !matches!(
            tokenizer.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::BertPreTokenizer(_))
        ) {
            return None;
        }
        let ModelWrapper::WordPiece(model) = tokenizer.get_model() else {
            return None;
        };
        let vocab = model.get_vocab();
        if !vocab.contains_key(&model.unk_token) {
            return None;
        }
        let mut added_first_bytes = [false; 128];
        for token in tokenizer.get_added_tokens_decoder().values() {
            // Stripping the spaces around a token would reach past the run.
            if token.lstrip || token.rstrip {
                return None;
            }
            let Some(&first) = token.content.as_bytes().first() else {
                continue;
            };
            if !first.is_ascii() {
                continue;
            }
            added_first_bytes[usize::from(first.to_ascii_lowercase())] = true;
            added_first_bytes[usize::from(first.to_ascii_uppercase())] = true;
        }
        let prefix = model.continuing_subword_prefix.as_str();
        let mut starts = AHashSet::new();
        let mut continuations = AHashSet::new();
        for piece in vocab.into_keys() {
            match piece.strip_prefix(prefix).filter(|_| !prefix.is_empty()) {
                Some(rest) => continuations.insert(rest.into()),
                None => starts.insert(piece.into_boxed_str()),
            };
        }
        Some(Self {
            starts,
            continuations,
            max_chars: model.max_input_chars_per_word,
            added_first_bytes,
        })
    }

    /// Byte ranges of `segment`'s tokens, offset by `offset`, pushed onto `tokens`; the
    /// runs that are not plain ASCII are tokenized by `tokenizer`.
    pub fn tokenize(
        &self,
        tokenizer: &Tokenizer,
        segment: &str,
        offset: usize,
        tokens: &mut Vec<(usize, usize)>,
    ) {
        let bytes = segment.as_bytes();
        let mut lowered = Vec::new();
        let mut position = 0;
        while position < bytes.len() {
            if matches!(bytes[position], b' ' | b'\t' | b'\n' | b'\r') {
                position += 1;
                continue;
            }
            let run_start = position;
            let mut plain = true;
            while position < bytes.len() && !matches!(bytes[position], b' ' | b'\t' | b'\n' | b'\r')
            {
                let byte = bytes[position];
                if !(0x21..=0x7e).contains(&byte) || self.added_first_bytes[usize::from(byte)] {
                    plain = false;
                }
                position += 1;
            }
            // The run ends at an ASCII byte, so at a character boundary.
            let run = &segment[run_start..position];
            if plain {
                self.tokenize_run(run.as_bytes(), offset + run_start, &mut lowered, tokens);
            } else {
                super::push_encoded(tokenizer, run, offset + run_start, tokens);
            }
        }
    }

    /// A run of printable ASCII: its letters-and-digits pre-tokens and punctuation marks.
    fn tokenize_run(
        &self,
        run: &[u8],
        offset: usize,
        lowered: &mut Vec<u8>,
        tokens: &mut Vec<(usize, usize)>,
    ) {
        let mut start = 0;
        while start < run.len() {
            let end = if run[start].is_ascii_alphanumeric() {
                start
                    + run[start..]
                        .iter()
                        .take_while(|byte| byte.is_ascii_alphanumeric())
                        .count()
            } else {
                start + 1
            };
            lowered.clear();
            lowered.extend(run[start..end].iter().map(u8::to_ascii_lowercase));
            self.word_pieces(lowered, offset + start, tokens);
            start = end;
        }
    }

    /// WordPiece on one lowercased pre-token: the longest piece at each step, or one
    /// `[UNK]` for the whole pre-token.
    fn word_pieces(&self, word: &[u8], offset: usize, tokens: &mut Vec<(usize, usize)>) {
        let whole = (offset, offset + word.len());
        if word.len() > self.max_chars {
            tokens.push(whole);
            return;
        }
        let first_token = tokens.len();
        let mut start = 0;
        while start < word.len() {
            let pieces = if start == 0 {
                &self.starts
            } else {
                &self.continuations
            };
            let found = (start + 1..=word.len()).rev().find(|&end| {
                // Printable ASCII is UTF-8.
                std::str::from_utf8(&word[start..end]).is_ok_and(|piece| pieces.contains(piece))
            });
            let Some(end) = found else {
                tokens.truncate(first_token);
                tokens.push(whole);
                return;
            };
            tokens.push((offset + start, offset + end));
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_tokenizer() -> Tokenizer {
        let path = testkit::model_dir().join("tokenizer.json");
        let mut tokenizer =
            super::super::tokenizer_file::load(&path).expect("the model's tokenizer");
        tokenizer.with_truncation(None).expect("no truncation");
        tokenizer.with_padding(None);
        tokenizer
    }

    fn crate_ranges(tokenizer: &Tokenizer, text: &str) -> Vec<(usize, usize)> {
        let encoding = tokenizer.encode(text, false).expect("encodes");
        encoding
            .get_offsets()
            .iter()
            .copied()
            .filter(|(start, end)| end > start)
            .collect()
    }

    fn fast_ranges(
        fast: &AsciiWordPiece,
        tokenizer: &Tokenizer,
        text: &str,
    ) -> Vec<(usize, usize)> {
        let mut tokens = Vec::new();
        fast.tokenize(tokenizer, text, 0, &mut tokens);
        tokens
    }

    #[test]
    fn the_same_ranges_as_the_tokenizers_crate() {
        let tokenizer = model_tokenizer();
        let fast = AsciiWordPiece::for_tokenizer(&tokenizer).expect("BERT uncased is taken over");
        let long_word = "x".repeat(101);
        let cases = [
            "The quick brown fox jumps over the lazy dog.",
            "UPPER lower MiXeD 12345 3.14 e-mail foo_bar a/b (c) [d] {e} \"q\" 'r' `s` ~t^ $5 100%",
            "unaffable tokenization supercalifragilisticexpialidocious \\documentclass{article}",
            "Word\tTabs\nLines\r\nCarriage   spaces  ",
            "ligature ﬁle, café, naïve, Straße, “quotes” and ‘apostrophes’ — dashes – here",
            "non\u{a0}breaking\u{2003}spaces and zero\u{200b}width",
            "control\u{0}chars\u{7}and\u{c}form\u{1b}feeds\u{7f}del",
            "[CLS] special [SEP] tokens [MASK]x[PAD] [unk] [Cls]",
            "中文字符 and 日本語 mixed with ascii",
            "emoji 🎉 and symbols ∑ ∫ ≤ ≥ ± × ÷",
            &long_word,
            "",
            "   ",
            "a",
            "!!!???...",
        ];
        for text in cases {
            assert_eq!(
                fast_ranges(&fast, &tokenizer, text),
                crate_ranges(&tokenizer, text),
                "{text:?}"
            );
        }
        // Plain ASCII never reaches the fallback: with a fallback that knows one word,
        // the ranges are still BERT's.
        let plain = "Plain ASCII, with UPPER case and tokenization: 3.14!";
        let mut tokens = Vec::new();
        fast.tokenize(&word_level_tokenizer(), plain, 0, &mut tokens);
        assert_eq!(tokens, crate_ranges(&tokenizer, plain));
        // Pseudo-random text over an alphabet that mixes every kind of byte above.
        let alphabet: Vec<char> =
            "abcXYZ019 .,;:!?-_/\\()[]{}'\"\t\n\r é–’ﬁ\u{a0}\u{0}\u{c}中🎉#@$%^&*+=<>|~`"
                .chars()
                .collect();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..300 {
            let length = 1 + (state % 200) as usize;
            let text: String = (0..length)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    alphabet[(state >> 33) as usize % alphabet.len()]
                })
                .collect();
            assert_eq!(
                fast_ranges(&fast, &tokenizer, &text),
                crate_ranges(&tokenizer, &text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_corpus_text_gets_the_same_ranges() {
        // Real prose: the README and the docs of this repository, page-sized pieces.
        let tokenizer = model_tokenizer();
        let fast = AsciiWordPiece::for_tokenizer(&tokenizer).expect("BERT uncased is taken over");
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut checked = 0;
        for name in [
            "README.md",
            "bench/README.md",
            "docs/tracing.md",
            "docs/scaling.md",
        ] {
            let Ok(text) = std::fs::read_to_string(root.join(name)) else {
                continue;
            };
            for piece in text.split("\n\n") {
                assert_eq!(
                    fast_ranges(&fast, &tokenizer, piece),
                    crate_ranges(&tokenizer, piece),
                    "{piece:?}"
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} pieces were compared");
    }

    fn word_level_tokenizer() -> Tokenizer {
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
            "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"[UNK]":0,"a":1},"unk_token":"[UNK]"}}"#;
        Tokenizer::from_bytes(json.as_bytes()).expect("valid tokenizer json")
    }

    #[test]
    fn a_tokenizer_of_another_shape_is_not_taken_over() {
        assert!(AsciiWordPiece::for_tokenizer(&word_level_tokenizer()).is_none());
    }
}
