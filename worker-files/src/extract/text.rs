use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use super::error::human_bytes;
use super::{ExtractError, ExtractLimits, normalize_text, panic_message};

/// HTML inputs may be this many times larger than `max_text_bytes`: markup is not text.
const HTML_INPUT_FACTOR: u64 = 4;
/// Wide enough that html2text never wraps a paragraph; wrapping would put line breaks into sentences.
const HTML_RENDER_WIDTH: usize = 100_000;

/// Renders HTML to plain text with html2text: no decorations (no `#` headings or `[link]` brackets), no link footnotes, tables flattened;
/// `<head>`, `<script>` and `<style>` are dropped.
pub(super) fn extract_html(path: &Path, limits: &ExtractLimits) -> Result<String, ExtractError> {
    let bytes = read_capped(
        path,
        limits.max_text_bytes.saturating_mul(HTML_INPUT_FACTOR),
        "HTML",
    )?;
    let rendered = catch_unwind(AssertUnwindSafe(|| {
        html2text::config::with_decorator(html2text::render::TrivialDecorator::new())
            .raw_mode(true)
            .link_footnotes(false)
            .no_link_wrapping()
            .allow_width_overflow()
            .string_from_read(bytes.as_slice(), HTML_RENDER_WIDTH)
    }))
    .map_err(|payload| ExtractError::ExtractCrashed {
        detail: format!(
            "html renderer panicked: {}",
            panic_message(payload.as_ref())
        ),
    })?;
    let text = rendered.map_err(|error| ExtractError::Corrupt {
        detail: format!("HTML cannot be rendered: {error}"),
    })?;
    Ok(normalize_text(&text))
}

/// Reads Markdown or plain text as-is (Markdown syntax is kept for the Markdown-aware chunker).
///
/// Valid UTF-8 is taken as it is. Invalid UTF-8 with only a few bad sequences (at most one per 1,000 bytes,
/// e.g. a truncated character) is decoded lossily; anything worse is assumed to be a legacy single-byte
/// encoding and decoded as Windows-1252, which never fails, so text files never end up `corrupt`.
pub(super) fn extract_plain(path: &Path, limits: &ExtractLimits) -> Result<String, ExtractError> {
    let bytes = read_capped(path, limits.max_text_bytes, "text")?;
    Ok(normalize_text(&decode_text(&bytes)))
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

fn decode_text(bytes: &[u8]) -> String {
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
