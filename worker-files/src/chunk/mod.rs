//! Token-aware chunking with text-splitter and the embedding model's tokenizer.
//!
//! Pages are chunked one at a time, so every chunk knows its page. Offsets are byte
//! offsets into the document text: the pages joined by a form feed (`\f`), as pdftotext
//! does.

use text_splitter::{ChunkConfig, ChunkConfigError, MarkdownSplitter, TextSplitter};
use tokenizers::Tokenizer;

use crate::extract::{DocumentKind, Page};

/// The separator between pages in the document text that offsets point into.
pub const PAGE_SEPARATOR: &str = "\u{c}";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub index: u32,
    pub page: Option<u32>,
    pub byte_start: usize,
    pub byte_end: usize,
    pub token_count: usize,
    pub text: String,
}

/// Splitters built once per worker and shared by every file.
pub struct Chunker {
    tokenizer: Tokenizer,
    text: TextSplitter<Tokenizer>,
    markdown: MarkdownSplitter<Tokenizer>,
}

impl Chunker {
    pub fn new(
        tokenizer: Tokenizer,
        max_tokens: usize,
        overlap_tokens: usize,
    ) -> Result<Self, ChunkConfigError> {
        let config = || {
            ChunkConfig::new(max_tokens)
                .with_sizer(tokenizer.clone())
                .with_overlap(overlap_tokens)
        };
        Ok(Self {
            text: TextSplitter::new(config()?),
            markdown: MarkdownSplitter::new(config()?),
            tokenizer,
        })
    }

    pub fn chunk(&self, kind: DocumentKind, pages: &[Page]) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut page_offset = 0;
        for page in pages {
            let pieces: Vec<(usize, &str)> = match kind {
                DocumentKind::Markdown => self.markdown.chunk_indices(&page.text).collect(),
                _ => self.text.chunk_indices(&page.text).collect(),
            };
            for (start, text) in pieces {
                let token_count = self
                    .tokenizer
                    .encode(text, false)
                    .map(|encoding| encoding.len())
                    .unwrap_or(0);
                chunks.push(Chunk {
                    index: chunks.len() as u32,
                    page: page.number,
                    byte_start: page_offset + start,
                    byte_end: page_offset + start + text.len(),
                    token_count,
                    text: text.to_string(),
                });
            }
            page_offset += page.text.len() + PAGE_SEPARATOR.len();
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word_level_tokenizer() -> Tokenizer {
        // A tiny whitespace tokenizer, so these tests need no model files.
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"[UNK]":0},"unk_token":"[UNK]"}}"#;
        Tokenizer::from_bytes(json.as_bytes()).expect("valid tokenizer json")
    }

    fn pages(texts: &[&str]) -> Vec<Page> {
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| Page {
                number: Some(index as u32 + 1),
                text: text.to_string(),
            })
            .collect()
    }

    #[test]
    fn chunks_respect_the_token_budget_and_keep_pages_and_offsets() {
        let chunker = Chunker::new(word_level_tokenizer(), 8, 2).unwrap();
        let first = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho";
        let second = "one two three four five six seven eight nine ten";
        let document_pages = pages(&[first, second]);
        let chunks = chunker.chunk(DocumentKind::Text, &document_pages);
        assert!(chunks.len() >= 4, "{chunks:?}");
        let document = format!("{first}{PAGE_SEPARATOR}{second}");
        for (position, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.index as usize, position);
            assert!(chunk.token_count <= 8, "{chunk:?}");
            assert_eq!(&document[chunk.byte_start..chunk.byte_end], chunk.text);
        }
        assert!(
            chunks
                .iter()
                .any(|chunk| chunk.page == Some(2) && chunk.text.contains("ten"))
        );
        assert!(
            chunks
                .iter()
                .filter(|chunk| chunk.page == Some(1))
                .all(|chunk| !chunk.text.contains("seven"))
        );
    }

    #[test]
    fn overlap_repeats_words_between_neighbours() {
        let chunker = Chunker::new(word_level_tokenizer(), 6, 2).unwrap();
        let text = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12";
        let chunks = chunker.chunk(DocumentKind::Text, &pages(&[text]));
        assert!(chunks.len() >= 2);
        assert!(
            chunks[0].byte_end > chunks[1].byte_start,
            "neighbours should overlap: {chunks:?}"
        );
    }

    #[test]
    fn overlap_not_below_size_is_a_config_error() {
        assert!(Chunker::new(word_level_tokenizer(), 4, 4).is_err());
    }
}
