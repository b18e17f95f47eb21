use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, Tag, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

use super::error::human_bytes;
use super::structure::{HEADING_END_MARK, heading_start_mark, scrub_marks};
use super::{ExtractError, ExtractLimits, normalize_text, panic_message};

/// HTML inputs may be this many times larger than `max_text_bytes`: markup is not text.
const HTML_INPUT_FACTOR: u64 = 4;
/// The tokenizer is fed in pieces of this size.
const HTML_FEED_BYTES: usize = 64 * 1024;

/// Renders HTML to plain text with html5ever's *tokenizer* only: no tree is built, so time and memory are
/// linear in the input whatever the nesting depth (a tree builder plus a recursive renderer are not: a
/// 2 MB file of nested `<div>`s timed out). Block elements end a paragraph, `<br>` and table rows a line,
/// table cells are separated by " | "; the content of `<head>`, `<script>`, `<style>`, `<template>` and
/// `<noscript>` is dropped. Character references are decoded by the tokenizer. `h1`–`h6` are
/// wrapped in heading marks ([`super::structure`]).
pub(super) fn extract_html(path: &Path, limits: &ExtractLimits) -> Result<String, ExtractError> {
    let bytes = read_capped(
        path,
        limits.max_text_bytes.saturating_mul(HTML_INPUT_FACTOR),
        "HTML",
    )?;
    html_bytes_to_text(&bytes)
}

/// Decodes and renders HTML bytes (see [`extract_html`]); headings stay between the
/// marks of [`super::structure`].
pub(super) fn html_bytes_to_text(bytes: &[u8]) -> Result<String, ExtractError> {
    let source = decode_text(bytes);
    let rendered = catch_unwind(AssertUnwindSafe(|| html_to_text(&source))).map_err(|payload| {
        ExtractError::ExtractCrashed {
            detail: format!(
                "html tokenizer panicked: {}",
                panic_message(payload.as_ref())
            ),
        }
    })?;
    Ok(normalize_text(&rendered))
}

/// The tokenizer walk behind [`extract_html`].
fn html_to_text(source: &str) -> String {
    let sink = TextSink::default();
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    let mut start = 0;
    while start < source.len() {
        let mut end = (start + HTML_FEED_BYTES).min(source.len());
        while !source.is_char_boundary(end) {
            end += 1;
        }
        input.push_back(StrTendril::from_slice(&source[start..end]));
        let _ = tokenizer.feed(&input);
        start = end;
    }
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.output.into_inner()
}

/// Collects text from tokens. Interior mutability because html5ever's sink API takes `&self`.
#[derive(Default)]
struct TextSink {
    output: RefCell<String>,
    /// Depth of elements whose content is dropped (`<script>` inside `<head>` counts twice).
    hidden_depth: Cell<usize>,
    /// The current table row has had a cell already (the next one gets a " | " separator).
    cell_in_row: Cell<bool>,
}

impl TextSink {
    fn push(&self, text: &str) {
        self.output.borrow_mut().push_str(text);
    }

    fn tag(&self, tag: &Tag) -> TokenSinkResult<()> {
        let name: &str = &tag.name;
        let opening = tag.kind == TagKind::StartTag;
        if is_hidden(name) {
            if opening && !tag.self_closing {
                self.hidden_depth.set(self.hidden_depth.get() + 1);
            } else if !opening {
                self.hidden_depth
                    .set(self.hidden_depth.get().saturating_sub(1));
            }
        }
        // Elements whose content the tokenizer must read as raw text, as a tree builder would
        // tell it; otherwise `<script>if (a<b)…` would be read as markup.
        let raw_kind = if opening && !tag.self_closing {
            match name {
                "script" => Some(RawKind::ScriptData),
                "style" | "xmp" | "iframe" | "noembed" | "noframes" => Some(RawKind::Rawtext),
                "textarea" | "title" => Some(RawKind::Rcdata),
                _ => None,
            }
        } else {
            None
        };
        if let Some(level) = heading_level(name) {
            if opening {
                self.push("\n\n");
                self.output.borrow_mut().push(heading_start_mark(level));
            } else {
                self.output.borrow_mut().push(HEADING_END_MARK);
                self.push("\n\n");
            }
            return TokenSinkResult::Continue;
        }
        match name {
            "br" => self.push("\n"),
            "tr" => {
                self.cell_in_row.set(false);
                self.push("\n");
            }
            "td" | "th" if opening => {
                if self.cell_in_row.get() {
                    self.push(" | ");
                }
                self.cell_in_row.set(true);
            }
            "li" | "dt" | "dd" | "caption" if opening => self.push("\n"),
            name if is_block(name) => self.push("\n\n"),
            _ => {}
        }
        match raw_kind {
            Some(kind) => TokenSinkResult::RawData(kind),
            None => TokenSinkResult::Continue,
        }
    }
}

impl TokenSink for TextSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line_number: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => return self.tag(&tag),
            Token::CharacterTokens(text) if self.hidden_depth.get() == 0 => {
                self.push(&scrub_marks(&text));
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

/// `h1`..`h6` as 1..6.
fn heading_level(name: &str) -> Option<u8> {
    match name {
        "h1" => Some(1),
        "h2" => Some(2),
        "h3" => Some(3),
        "h4" => Some(4),
        "h5" => Some(5),
        "h6" => Some(6),
        _ => None,
    }
}

/// Elements whose content is not document text.
fn is_hidden(name: &str) -> bool {
    matches!(
        name,
        "head" | "script" | "style" | "template" | "noscript" | "title"
    )
}

/// Elements that start and end a paragraph of their own.
fn is_block(name: &str) -> bool {
    matches!(
        name,
        "p" | "div"
            | "section"
            | "article"
            | "aside"
            | "header"
            | "footer"
            | "nav"
            | "main"
            | "blockquote"
            | "pre"
            | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "ul"
            | "ol"
            | "dl"
            | "table"
            | "figure"
            | "figcaption"
            | "hr"
            | "address"
            | "details"
            | "summary"
            | "form"
            | "fieldset"
            | "body"
            | "html"
    )
}

/// Reads Markdown or plain text (Markdown syntax is kept for the chunker), decoded by [`decode_text`].
pub(super) fn extract_plain(path: &Path, limits: &ExtractLimits) -> Result<String, ExtractError> {
    let bytes = read_capped(path, limits.max_text_bytes, "text")?;
    Ok(normalize_text(&decode_text(&bytes)))
}

/// A CSV file: read capped like plain text, decoded, then parsed as one sheet.
pub(super) fn extract_csv(
    path: &Path,
    limits: &ExtractLimits,
) -> Result<super::Page, ExtractError> {
    let bytes = read_capped(path, limits.max_text_bytes, "CSV")?;
    super::spreadsheet::csv_page(&decode_text(&bytes), limits)
}

fn read_capped(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>, ExtractError> {
    let metadata =
        std::fs::metadata(path).map_err(|error| ExtractError::io("stat input file", &error))?;
    if metadata.len() > max_bytes {
        return Err(ExtractError::TooLarge {
            detail: format!(
                "{what} file is {}, limit {}",
                human_bytes(metadata.len()),
                human_bytes(max_bytes)
            ),
        });
    }
    std::fs::read(path).map_err(|error| ExtractError::io("read input file", &error))
}

/// A Unicode encoding announced by a byte order mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BomEncoding {
    Utf8,
    Utf16LittleEndian,
    Utf16BigEndian,
    Utf32LittleEndian,
    Utf32BigEndian,
}

impl BomEncoding {
    fn bom_len(self) -> usize {
        match self {
            BomEncoding::Utf8 => 3,
            BomEncoding::Utf16LittleEndian | BomEncoding::Utf16BigEndian => 2,
            BomEncoding::Utf32LittleEndian | BomEncoding::Utf32BigEndian => 4,
        }
    }
}

/// The encoding of `bytes` by its byte order mark (UTF-32 is checked first: its little-endian BOM
/// starts like UTF-16's).
pub(super) fn bom_encoding(bytes: &[u8]) -> Option<BomEncoding> {
    if bytes.starts_with(&[0xFF, 0xFE, 0x00, 0x00]) {
        Some(BomEncoding::Utf32LittleEndian)
    } else if bytes.starts_with(&[0x00, 0x00, 0xFE, 0xFF]) {
        Some(BomEncoding::Utf32BigEndian)
    } else if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        Some(BomEncoding::Utf8)
    } else if bytes.starts_with(&[0xFF, 0xFE]) {
        Some(BomEncoding::Utf16LittleEndian)
    } else if bytes.starts_with(&[0xFE, 0xFF]) {
        Some(BomEncoding::Utf16BigEndian)
    } else {
        None
    }
}

/// Decodes text without ever refusing it.
///
/// - A UTF-8, UTF-16 (LE/BE) or UTF-32 (LE/BE) byte order mark decides the encoding; invalid
///   sequences and a truncated last unit become U+FFFD.
/// - Without a BOM, valid UTF-8 is taken as it is; invalid UTF-8 with only a few bad sequences (at most
///   one per 1,000 bytes, e.g. a truncated character) has them replaced by U+FFFD; anything worse is
///   assumed to be a legacy single-byte encoding and decoded as Windows-1252, which never fails.
pub(super) fn decode_text(bytes: &[u8]) -> String {
    if let Some(encoding) = bom_encoding(bytes) {
        let body = &bytes[encoding.bom_len()..];
        return match encoding {
            BomEncoding::Utf8 => String::from_utf8_lossy(body).into_owned(),
            BomEncoding::Utf16LittleEndian => decode_utf16(body, u16::from_le_bytes),
            BomEncoding::Utf16BigEndian => decode_utf16(body, u16::from_be_bytes),
            BomEncoding::Utf32LittleEndian => decode_utf32(body, u32::from_le_bytes),
            BomEncoding::Utf32BigEndian => decode_utf32(body, u32::from_be_bytes),
        };
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return text.to_owned();
    }
    let invalid_sequences = bytes
        .utf8_chunks()
        .filter(|chunk| !chunk.invalid().is_empty())
        .count();
    if invalid_sequences * 1000 <= bytes.len() {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    bytes.iter().map(|&byte| windows_1252_char(byte)).collect()
}

fn decode_utf16(body: &[u8], unit: fn([u8; 2]) -> u16) -> String {
    let units = body.chunks_exact(2).map(|pair| unit([pair[0], pair[1]]));
    let mut text: String = char::decode_utf16(units)
        .map(|decoded| decoded.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if !body.len().is_multiple_of(2) {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    text
}

fn decode_utf32(body: &[u8], unit: fn([u8; 4]) -> u32) -> String {
    let mut text: String = body
        .chunks_exact(4)
        .map(|quad| {
            char::from_u32(unit([quad[0], quad[1], quad[2], quad[3]]))
                .unwrap_or(char::REPLACEMENT_CHARACTER)
        })
        .collect();
    if !body.len().is_multiple_of(4) {
        text.push(char::REPLACEMENT_CHARACTER);
    }
    text
}

/// Windows-1252: Latin-1 except for 0x80..=0x9F, where it has typographic characters.
fn windows_1252_char(byte: u8) -> char {
    const HIGH_CONTROL_RANGE: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    match byte {
        0x80..=0x9F => HIGH_CONTROL_RANGE[usize::from(byte - 0x80)],
        other => char::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boms_decide_the_encoding() {
        let text = "Grüße, 世界 🎉";
        let mut utf16le = vec![0xFF, 0xFE];
        let mut utf16be = vec![0xFE, 0xFF];
        for unit in text.encode_utf16() {
            utf16le.extend_from_slice(&unit.to_le_bytes());
            utf16be.extend_from_slice(&unit.to_be_bytes());
        }
        let mut utf32le = vec![0xFF, 0xFE, 0, 0];
        let mut utf32be = vec![0, 0, 0xFE, 0xFF];
        for character in text.chars() {
            utf32le.extend_from_slice(&u32::from(character).to_le_bytes());
            utf32be.extend_from_slice(&u32::from(character).to_be_bytes());
        }
        let mut utf8 = vec![0xEF, 0xBB, 0xBF];
        utf8.extend_from_slice(text.as_bytes());
        for bytes in [utf16le, utf16be, utf32le, utf32be, utf8] {
            assert_eq!(decode_text(&bytes), text, "{:?}", bom_encoding(&bytes));
        }
        // A truncated unit and an unpaired surrogate are replaced, not refused.
        assert_eq!(
            decode_text(&[0xFF, 0xFE, b'a', 0, 0x00, 0xD8, b'b']),
            "a\u{FFFD}\u{FFFD}"
        );
    }

    #[test]
    fn html_text_is_linear_in_nesting_depth() {
        let depth = 200_000;
        let mut html = "<div>".repeat(depth);
        html.push_str("deep text");
        html.push_str(&"</div>".repeat(depth));
        let started = std::time::Instant::now();
        let text = normalize_text(&html_to_text(&html));
        assert_eq!(text, "deep text");
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    }

    #[test]
    fn script_with_markup_like_content_is_dropped() {
        let html = "<p>before</p><script>if (a<b) { document.write('<p>no</p>') }</script><p>after &amp; more&nbsp;x</p>";
        assert_eq!(
            normalize_text(&html_to_text(html)),
            "before\n\nafter & more x"
        );
    }
}
