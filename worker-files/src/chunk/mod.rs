//! Token-aware chunking in linear time, with the embedding model's tokenizer.
//!
//! Runs inside the extraction child (see `extract::sandbox`): the text is untrusted.
//!
//! - **Tokenize once.** Each page is cut into bounded segments (at most [`SEGMENT_BYTES`], ended at a
//!   paragraph break, else a line break, else a space, else anywhere) and each segment is tokenized
//!   once, keeping every token's byte offsets. A 20 MB line with no break costs one pass. Runs of
//!   plain ASCII go through [`ascii_wordpiece`] (BERT's uncased WordPiece, the same ranges as the
//!   tokenizers crate, several times faster); every other run through the tokenizers crate.
//! - **Sections first.** A chunk ends where a new section starts (a heading the extractor found:
//!   Markdown, HTML `h1`–`h6`, DOCX heading styles; a PDF page, whose outline entries sit at its
//!   start), once it holds more than heading lines; the next chunk starts at that heading, without
//!   overlap into the section before.
//! - **Cut by token offsets.** Otherwise a chunk takes at most `max_tokens` tokens and ends at the
//!   strongest boundary in the second half of that window: a heading, a paragraph break, a sentence end,
//!   a line break, a space; only a run of text without any space is cut mid-word. The next chunk starts
//!   `overlap_tokens` earlier, at a word start. Each step looks at one window, so the whole is linear.
//! - **Heading path.** Each chunk carries the titles of the sections it starts in, outermost first
//!   (a document-wide path: headings carry over to the next pages).
//! - **Count once.** A chunk's token count is the number of tokens it took; nothing is encoded again.
//!
//! Offsets are byte offsets into the document text: the pages joined by a form feed (`\f`), as
//! pdftotext does.

/// BERT's uncased WordPiece on plain ASCII runs, the same token ranges as the tokenizers crate.
pub mod ascii_wordpiece;
/// Reads `tokenizer.json` without the tokenizers crate's slow path (each child loads it once).
pub mod tokenizer_file;

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::extract::structure::{Heading, HeadingPath};
use crate::extract::{Page, TextPart};

/// The separator between pages in the document text that offsets point into.
pub const PAGE_SEPARATOR: &str = "\u{c}";
/// Longest piece of text handed to the tokenizer at once (its per-token bookkeeping is large).
pub const SEGMENT_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub index: u32,
    pub page: Option<u32>,
    /// Where the text comes from (DOCX parts); `None` for body text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<TextPart>,
    pub byte_start: usize,
    pub byte_end: usize,
    pub token_count: usize,
    pub text: String,
    /// The titles of the sections the chunk starts in, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heading_path: Vec<String>,
    /// The text was read by OCR.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ocr: bool,
}

/// Why a chunker cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ChunkConfigError {
    #[error("chunk size must be at least 1 token")]
    EmptyChunks,
    #[error("overlap ({overlap}) must be smaller than the chunk size ({max_tokens})")]
    OverlapTooLarge { max_tokens: usize, overlap: usize },
    #[error("cannot load the tokenizer {path}: {message}")]
    Tokenizer { path: String, message: String },
}

/// How strongly the gap before a token separates it from the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Boundary {
    /// Inside a word (a subword or punctuation right after a letter).
    None,
    Word,
    Line,
    Sentence,
    Paragraph,
    /// A section heading starts here (or the text ends).
    Heading,
}

/// The tokenizer and the chunk sizes; built once per child.
pub struct Chunker {
    tokenizer: Tokenizer,
    /// The fast path for plain ASCII, when the tokenizer is BERT's uncased one.
    ascii: Option<ascii_wordpiece::AsciiWordPiece>,
    max_tokens: usize,
    overlap_tokens: usize,
}

impl Chunker {
    pub fn new(
        tokenizer: Tokenizer,
        max_tokens: usize,
        overlap_tokens: usize,
    ) -> Result<Self, ChunkConfigError> {
        if max_tokens == 0 {
            return Err(ChunkConfigError::EmptyChunks);
        }
        if overlap_tokens >= max_tokens {
            return Err(ChunkConfigError::OverlapTooLarge {
                max_tokens,
                overlap: overlap_tokens,
            });
        }
        Ok(Self {
            ascii: ascii_wordpiece::AsciiWordPiece::for_tokenizer(&tokenizer),
            tokenizer,
            max_tokens,
            overlap_tokens,
        })
    }

    /// Loads a Hugging Face `tokenizer.json` (truncation and padding off: every token counts).
    pub fn from_tokenizer_file(
        path: &Path,
        max_tokens: usize,
        overlap_tokens: usize,
    ) -> Result<Self, ChunkConfigError> {
        let load_error = |message: String| ChunkConfigError::Tokenizer {
            path: path.display().to_string(),
            message,
        };
        let mut tokenizer = tokenizer_file::load(path).map_err(load_error)?;
        tokenizer
            .with_truncation(None)
            .map_err(|error| load_error(error.to_string()))?;
        tokenizer.with_padding(None);
        Chunker::new(tokenizer, max_tokens, overlap_tokens)
    }

    pub fn chunk(&self, pages: &[Page]) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut page_offset = 0;
        let mut tokens = Vec::new();
        let mut heading_path = HeadingPath::default();
        for page in pages {
            self.tokenize(&page.text, &mut tokens);
            self.cut(page, page_offset, &tokens, &mut heading_path, &mut chunks);
            page_offset += page.text.len() + PAGE_SEPARATOR.len();
        }
        chunks
    }

    /// Byte ranges of every token of `text`, each segment tokenized once.
    fn tokenize(&self, text: &str, tokens: &mut Vec<(usize, usize)>) {
        tokens.clear();
        let mut segment_start = 0;
        while segment_start < text.len() {
            let segment_end = segment_end(text, segment_start);
            let segment = &text[segment_start..segment_end];
            match &self.ascii {
                Some(ascii) => ascii.tokenize(&self.tokenizer, segment, segment_start, tokens),
                None => push_encoded(&self.tokenizer, segment, segment_start, tokens),
            }
            segment_start = segment_end;
        }
    }

    fn cut(
        &self,
        page: &Page,
        page_offset: usize,
        tokens: &[(usize, usize)],
        heading_path: &mut HeadingPath,
        chunks: &mut Vec<Chunk>,
    ) {
        let text = page.text.as_str();
        let sections = Sections::new(&page.headings, tokens);
        let boundary = |position: usize| boundary_before(text, tokens, position, &sections);
        let token_total = tokens.len();
        let mut next_heading = 0;
        let mut start = 0;
        while start < token_total {
            let end = match self.section_end(start, token_total, &sections) {
                Some(section_end) => section_end,
                None if token_total - start <= self.max_tokens => token_total,
                None => self.best_end(start, &boundary),
            };
            let byte_start = tokens[start].0;
            let byte_end = tokens[end - 1].1;
            while let Some(heading) = page.headings.get(next_heading)
                && heading.offset <= byte_start
            {
                heading_path.enter(heading);
                next_heading += 1;
            }
            chunks.push(Chunk {
                index: chunks.len() as u32,
                page: page.number,
                part: page.part.filter(|part| *part != TextPart::Body),
                byte_start: page_offset + byte_start,
                byte_end: page_offset + byte_end,
                token_count: end - start,
                text: text[byte_start..byte_end].to_owned(),
                heading_path: heading_path.titles(),
                ocr: page.ocr,
            });
            if end == token_total {
                break;
            }
            start = if sections.starts_at(end) {
                end
            } else {
                self.next_start(start, end, &boundary)
            };
        }
        // Headings after the last chunk's start still frame the next page.
        for heading in page.headings.iter().skip(next_heading) {
            heading_path.enter(heading);
        }
    }

    /// Where the chunk starting at `start` ends because a section starts: the first heading in its
    /// window that follows text other than heading lines.
    fn section_end(&self, start: usize, token_total: usize, sections: &Sections) -> Option<usize> {
        if sections.is_empty() {
            return None;
        }
        let window_end = (start + self.max_tokens).min(token_total - 1);
        let mut has_body = false;
        for candidate in (start + 1)..=window_end {
            has_body |= !sections.in_heading[candidate - 1];
            if has_body && sections.starts_at(candidate) {
                return Some(candidate);
            }
        }
        None
    }

    /// The end (exclusive) of the chunk starting at `start`: the strongest boundary in the second half of
    /// the window, the latest one among equals; a word boundary anywhere; or the full window.
    fn best_end(&self, start: usize, boundary: &impl Fn(usize) -> Boundary) -> usize {
        let window_end = start + self.max_tokens;
        let half = start + self.max_tokens.div_ceil(2);
        let mut best = window_end;
        let mut best_level = Boundary::None;
        for candidate in (half.max(start + 1)..=window_end).rev() {
            let level = boundary(candidate);
            if level > best_level {
                best = candidate;
                best_level = level;
            }
        }
        if best_level > Boundary::None {
            return best;
        }
        ((start + 1)..half)
            .rev()
            .find(|candidate| boundary(*candidate) > Boundary::None)
            .unwrap_or(window_end)
    }

    /// Where the chunk after `start..end` begins: `overlap_tokens` before `end`, moved forward to a
    /// word start; always after `start`.
    fn next_start(&self, start: usize, end: usize, boundary: &impl Fn(usize) -> Boundary) -> usize {
        if self.overlap_tokens == 0 {
            return end;
        }
        let earliest = end.saturating_sub(self.overlap_tokens).max(start + 1);
        (earliest..end)
            .find(|candidate| boundary(*candidate) > Boundary::None)
            .unwrap_or(earliest)
    }
}

/// Where a page's headings are, in tokens.
struct Sections {
    /// Indexes of the tokens that start a heading, ascending (a heading at the page's start
    /// is not a boundary: the page starts a chunk anyway).
    heading_starts: Vec<usize>,
    /// Per token: whether it lies inside a heading's text (empty when the page has none).
    in_heading: Vec<bool>,
}

impl Sections {
    /// One merge of the (ordered) headings with the tokens: linear.
    fn new(headings: &[Heading], tokens: &[(usize, usize)]) -> Sections {
        let mut sections = Sections {
            heading_starts: Vec::new(),
            in_heading: Vec::new(),
        };
        if headings.iter().all(|heading| heading.offset == 0) {
            return sections;
        }
        sections.in_heading = vec![false; tokens.len()];
        let mut token = 0;
        for heading in headings {
            while token < tokens.len() && tokens[token].0 < heading.offset {
                token += 1;
            }
            if token > 0 && token < tokens.len() && sections.heading_starts.last() != Some(&token) {
                sections.heading_starts.push(token);
            }
            let mut inside = token;
            while inside < tokens.len() && tokens[inside].0 < heading.end {
                sections.in_heading[inside] = true;
                inside += 1;
            }
        }
        sections
    }

    fn is_empty(&self) -> bool {
        self.heading_starts.is_empty()
    }

    fn starts_at(&self, position: usize) -> bool {
        self.heading_starts.binary_search(&position).is_ok()
    }
}

/// The boundary before token `position` (1 ≤ position < tokens.len(); the ends are the strongest).
fn boundary_before(
    text: &str,
    tokens: &[(usize, usize)],
    position: usize,
    sections: &Sections,
) -> Boundary {
    if position == 0 || position >= tokens.len() || sections.starts_at(position) {
        return Boundary::Heading;
    }
    let (previous_start, previous_end) = tokens[position - 1];
    let next_start = tokens[position].0;
    if next_start <= previous_end {
        return Boundary::None;
    }
    let gap = &text[previous_end..next_start];
    let line_breaks = gap.bytes().filter(|byte| *byte == b'\n').count();
    if line_breaks >= 2 {
        return Boundary::Paragraph;
    }
    let previous = &text[previous_start..previous_end];
    if previous.ends_with(['.', '!', '?', ':', ';']) {
        return Boundary::Sentence;
    }
    if line_breaks == 1 {
        return Boundary::Line;
    }
    if gap.chars().any(char::is_whitespace) {
        Boundary::Word
    } else {
        Boundary::None
    }
}

/// Byte ranges of `text`'s tokens by the tokenizers crate, offset by `offset`, pushed onto
/// `tokens`. An encoding error (none is known for valid UTF-8) drops the text, never the file.
fn push_encoded(
    tokenizer: &Tokenizer,
    text: &str,
    offset: usize,
    tokens: &mut Vec<(usize, usize)>,
) {
    if let Ok(encoding) = tokenizer.encode(text, false) {
        for &(start, end) in encoding.get_offsets() {
            if end > start {
                tokens.push((offset + start, offset + end));
            }
        }
    }
}

/// The end of the segment starting at `start`: all of the rest when short, else the last paragraph break,
/// line break or space in the second half of a [`SEGMENT_BYTES`] window, else the window's end.
fn segment_end(text: &str, start: usize) -> usize {
    if text.len() - start <= SEGMENT_BYTES {
        return text.len();
    }
    let mut window_end = start + SEGMENT_BYTES;
    while !text.is_char_boundary(window_end) {
        window_end -= 1;
    }
    let mut search_start = start + SEGMENT_BYTES / 2;
    while !text.is_char_boundary(search_start) {
        search_start -= 1;
    }
    let window = &text[search_start..window_end];
    let cut = window
        .rfind("\n\n")
        .map(|position| position + 2)
        .or_else(|| window.rfind('\n').map(|position| position + 1))
        .or_else(|| window.rfind(' ').map(|position| position + 1));
    match cut {
        Some(position) => search_start + position,
        None => window_end,
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
            .map(|(index, text)| Page::new(Some(index as u32 + 1), text.to_string()))
            .collect()
    }

    #[test]
    fn chunks_respect_the_token_budget_and_keep_pages_and_offsets() {
        let chunker = Chunker::new(word_level_tokenizer(), 8, 2).unwrap();
        let first = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho";
        let second = "one two three four five six seven eight nine ten";
        let document_pages = pages(&[first, second]);
        let chunks = chunker.chunk(&document_pages);
        assert!(chunks.len() >= 4, "{chunks:?}");
        let document = format!("{first}{PAGE_SEPARATOR}{second}");
        for (position, chunk) in chunks.iter().enumerate() {
            assert_eq!(chunk.index as usize, position);
            assert!(chunk.token_count <= 8, "{chunk:?}");
            assert_eq!(&document[chunk.byte_start..chunk.byte_end], chunk.text);
            assert_eq!(chunk.token_count, chunk.text.split_whitespace().count());
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
        let chunks = chunker.chunk(&pages(&[text]));
        assert!(chunks.len() >= 2);
        assert!(
            chunks[0].byte_end > chunks[1].byte_start,
            "neighbours should overlap: {chunks:?}"
        );
    }

    #[test]
    fn chunks_end_at_sentences_and_paragraphs_when_they_can() {
        // The whitespace tokenizer makes "." a token of its own: 4 + 6 + 4 tokens.
        let chunker = Chunker::new(word_level_tokenizer(), 8, 0).unwrap();
        let text = "One two three. Four five six seven eight nine\n\nTen eleven twelve thirteen";
        let chunks = chunker.chunk(&pages(&[text]));
        let texts: Vec<&str> = chunks.iter().map(|chunk| chunk.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "One two three.",
                "Four five six seven eight nine",
                "Ten eleven twelve thirteen"
            ]
        );
    }

    #[test]
    fn chunks_start_at_sections_and_carry_their_heading_path_across_pages() {
        let chunker = Chunker::new(word_level_tokenizer(), 50, 5).unwrap();
        let first =
            "# Guide\nintro words here\n## Install\n### Linux\napt words\n## Usage\nrun words";
        let mut first_page = Page::new(Some(1), first.to_owned());
        first_page.headings = crate::extract::structure::markdown_headings(first);
        let second_page = Page::new(Some(2), "more usage words".to_owned());
        let chunks = chunker.chunk(&[first_page, second_page]);
        let texts: Vec<&str> = chunks.iter().map(|chunk| chunk.text.as_str()).collect();
        // "## Install" directly followed by "### Linux" stays one chunk: no heading-only chunk.
        assert_eq!(
            texts,
            [
                "# Guide\nintro words here",
                "## Install\n### Linux\napt words",
                "## Usage\nrun words",
                "more usage words"
            ]
        );
        let paths: Vec<Vec<String>> = chunks
            .iter()
            .map(|chunk| chunk.heading_path.clone())
            .collect();
        assert_eq!(
            paths,
            [
                vec!["Guide".to_owned()],
                vec!["Guide".to_owned(), "Install".to_owned()],
                vec!["Guide".to_owned(), "Usage".to_owned()],
                vec!["Guide".to_owned(), "Usage".to_owned()],
            ]
        );
        // No overlap reaches back across a section start.
        assert!(chunks[1].byte_start >= chunks[0].byte_end);
    }

    #[test]
    fn a_long_section_is_still_cut_by_the_token_budget_inside_its_path() {
        let chunker = Chunker::new(word_level_tokenizer(), 8, 2).unwrap();
        let body = "w ".repeat(40);
        let text = format!("# Big\n{}\n# Next\nend", body.trim_end());
        let mut page = Page::new(None, text.clone());
        page.headings = crate::extract::structure::markdown_headings(&text);
        let chunks = chunker.chunk(&[page]);
        assert!(chunks.iter().all(|chunk| chunk.token_count <= 8));
        let last = chunks.last().unwrap();
        assert_eq!(last.text, "# Next\nend");
        assert_eq!(last.heading_path, ["Next"]);
        assert!(
            chunks[..chunks.len() - 1]
                .iter()
                .all(|chunk| chunk.heading_path == ["Big"])
        );
    }

    #[test]
    fn overlap_not_below_size_is_a_config_error() {
        assert!(Chunker::new(word_level_tokenizer(), 4, 4).is_err());
        assert!(Chunker::new(word_level_tokenizer(), 0, 0).is_err());
    }

    #[test]
    fn one_long_line_without_breaks_is_chunked_in_linear_time() {
        let chunker = Chunker::new(word_level_tokenizer(), 50, 5).unwrap();
        let line = "word ".repeat(400_000); // 2 MB, no sentence or line break
        let started = std::time::Instant::now();
        let chunks = chunker.chunk(&pages(&[line.trim_end()]));
        let elapsed = started.elapsed();
        // 400,000 tokens, 45 new per chunk after the first.
        assert_eq!(chunks.len(), 1 + (400_000_usize - 50).div_ceil(45));
        assert!(chunks.iter().all(|chunk| chunk.token_count <= 50));
        assert!(
            chunks
                .windows(2)
                .all(|pair| pair[0].byte_start < pair[1].byte_start)
        );
        assert_eq!(
            chunks.last().map(|chunk| chunk.byte_end),
            Some(line.trim_end().len())
        );
        assert!(elapsed.as_secs() < 20, "{elapsed:?}");
        // A text without any space is still cut (mid-word), and nothing is lost.
        let blob = "x".repeat(SEGMENT_BYTES * 3 + 17);
        let blob_chunks = chunker.chunk(&pages(&[&blob]));
        let covered: usize = blob_chunks
            .iter()
            .map(|chunk| chunk.byte_end - chunk.byte_start)
            .sum();
        assert_eq!(covered, blob.len());
    }
}
