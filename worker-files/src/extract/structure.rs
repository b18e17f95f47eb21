//! Document structure: the headings of a text, so chunks can start at sections and carry
//! their heading path.
//!
//! Readers that see headings in markup (HTML `h1`–`h6`, DOCX heading styles, EPUB chapters)
//! wrap a heading's text in private-use marks while they render: [`heading_start_mark`]
//! before it, [`HEADING_END_MARK`] after it. The marks survive [`super::normalize_text`]
//! (they are neither control characters nor spaces), and [`take_heading_marks`] then
//! removes them in one pass, recording each heading's byte offset in the *normalized*
//! text. That way no reader has to track how normalization moves offsets. The same
//! characters in the input itself are dropped first ([`scrub_marks`]), so a file cannot
//! forge headings.
//!
//! Markdown keeps its syntax in the text; [`markdown_headings`] reads ATX headings
//! (`# Title`) line by line, outside fenced code blocks.
//!
//! Everything here is one linear pass; titles are capped at [`MAX_TITLE_CHARS`] and levels
//! at [`MAX_LEVEL`], so a heading path stays small whatever the input.

use serde::{Deserialize, Serialize};

/// Deepest heading level kept (DOCX has nine outline levels; HTML and Markdown six).
pub const MAX_LEVEL: u8 = 9;
/// A heading's title is cut to this many characters in heading paths.
pub const MAX_TITLE_CHARS: usize = 200;

/// The mark that ends a heading's text.
pub const HEADING_END_MARK: char = '\u{E010}';
/// The mark before a heading of level 1 is `U+E011`, of level 9 `U+E019`.
const HEADING_START_BASE: u32 = 0xE010;

/// One heading of a page's text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heading {
    /// Byte offset of the heading's first character in the page text.
    pub offset: usize,
    /// Byte offset just after the heading's text (its line, for Markdown).
    pub end: usize,
    /// 1 (outermost) to [`MAX_LEVEL`].
    pub level: u8,
    pub title: String,
}

/// The mark that starts a heading of `level` (clamped to 1..=[`MAX_LEVEL`]).
pub fn heading_start_mark(level: u8) -> char {
    let level = u32::from(level.clamp(1, MAX_LEVEL));
    char::from_u32(HEADING_START_BASE + level).unwrap_or(HEADING_END_MARK)
}

fn is_mark(character: char) -> bool {
    (HEADING_START_BASE..=HEADING_START_BASE + u32::from(MAX_LEVEL)).contains(&u32::from(character))
}

/// `text` without any heading mark (for text that comes from the input itself).
pub fn scrub_marks(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(is_mark) {
        std::borrow::Cow::Owned(
            text.chars()
                .filter(|character| !is_mark(*character))
                .collect(),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Removes the heading marks from `text` and returns the headings they delimited.
/// A heading with no text, or one never closed, is dropped (its text stays).
pub fn take_heading_marks(text: &str) -> (String, Vec<Heading>) {
    if !text.contains(is_mark) {
        return (text.to_owned(), Vec::new());
    }
    let mut output = String::with_capacity(text.len());
    let mut headings = Vec::new();
    let mut open: Option<(usize, u8)> = None;
    // Normalization trims lines but leaves one space between a mark and the heading's
    // text: the space after a start mark and those before an end mark are dropped.
    let mut skip_spaces = false;
    for character in text.chars() {
        if !is_mark(character) {
            if character == ' ' && skip_spaces {
                continue;
            }
            skip_spaces = false;
            output.push(character);
            continue;
        }
        if character == HEADING_END_MARK {
            skip_spaces = false;
            if let Some((start, level)) = open.take() {
                while output.len() > start && output.ends_with(' ') {
                    output.pop();
                }
                push_heading(&output, start, output.len(), level, &mut headings);
            }
            continue;
        }
        let level = (u32::from(character) - HEADING_START_BASE) as u8;
        open = Some((output.len(), level));
        skip_spaces = true;
    }
    (output, headings)
}

/// Records `text[start..end]` as a heading, trimmed; nothing when it is blank.
fn push_heading(text: &str, start: usize, end: usize, level: u8, headings: &mut Vec<Heading>) {
    let raw = &text[start..end];
    let leading = raw.len() - raw.trim_start().len();
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return;
    }
    headings.push(Heading {
        offset: start + leading,
        end: start + leading + trimmed.len(),
        level,
        title: short_title(trimmed),
    });
}

/// A title on one line, at most [`MAX_TITLE_CHARS`] characters.
pub fn short_title(text: &str) -> String {
    let one_line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_TITLE_CHARS)
        .collect();
    one_line
}

/// The ATX headings (`#` to `######`, then a space or the line end) of a Markdown text,
/// outside fenced code blocks (```` ``` ```` or `~~~`).
pub fn markdown_headings(text: &str) -> Vec<Heading> {
    let mut headings = Vec::new();
    let mut fence: Option<&str> = None;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let offset = line_start;
        line_start += line.len();
        let content = line.trim_end_matches('\n');
        let trimmed = content.trim_start();
        if let Some(open_fence) = fence {
            if trimmed.starts_with(open_fence) {
                fence = None;
            }
            continue;
        }
        if trimmed.starts_with("```") {
            fence = Some("```");
            continue;
        }
        if trimmed.starts_with("~~~") {
            fence = Some("~~~");
            continue;
        }
        let hashes = trimmed.bytes().take_while(|byte| *byte == b'#').count();
        if hashes == 0 || hashes > 6 {
            continue;
        }
        let rest = &trimmed[hashes..];
        if !(rest.is_empty() || rest.starts_with(' ')) {
            continue;
        }
        // A closing run of `#` is not part of the title.
        let title = rest.trim().trim_end_matches('#').trim();
        if title.is_empty() {
            continue;
        }
        let heading_offset = offset + (content.len() - trimmed.len());
        headings.push(Heading {
            offset: heading_offset,
            end: offset + content.len(),
            level: hashes as u8,
            title: short_title(title),
        });
    }
    headings
}

/// The heading path as headings are read in order: a heading of level `n` replaces the
/// entries of level `n` and deeper.
#[derive(Debug, Clone, Default)]
pub struct HeadingPath {
    entries: Vec<(u8, String)>,
}

impl HeadingPath {
    pub fn enter(&mut self, heading: &Heading) {
        while self
            .entries
            .last()
            .is_some_and(|(level, _)| *level >= heading.level)
        {
            self.entries.pop();
        }
        self.entries.push((heading.level, heading.title.clone()));
    }

    /// The titles, outermost first.
    pub fn titles(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(_, title)| title.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::normalize_text;

    #[test]
    fn marks_survive_normalization_and_give_offsets_in_the_clean_text() {
        let rendered = format!(
            "\n\n{}  Getting   started {}\n\nInstall it.\n\n{}Usage{}\n\nRun it.",
            heading_start_mark(1),
            HEADING_END_MARK,
            heading_start_mark(2),
            HEADING_END_MARK
        );
        let (text, headings) = take_heading_marks(&normalize_text(&rendered));
        assert_eq!(text, "Getting started\n\nInstall it.\n\nUsage\n\nRun it.");
        assert_eq!(headings.len(), 2);
        assert_eq!(
            &text[headings[0].offset..headings[0].end],
            "Getting started"
        );
        assert_eq!(headings[0].level, 1);
        assert_eq!(&text[headings[1].offset..headings[1].end], "Usage");
        assert_eq!(headings[1].level, 2);
    }

    #[test]
    fn forged_marks_in_the_input_are_scrubbed_and_unclosed_headings_dropped() {
        let forged = format!("a{}b{}c", heading_start_mark(3), HEADING_END_MARK);
        assert_eq!(scrub_marks(&forged), "abc");
        let (text, headings) = take_heading_marks(&format!("x{}y", heading_start_mark(1)));
        assert_eq!(text, "xy");
        assert!(headings.is_empty());
    }

    #[test]
    fn markdown_headings_skip_code_fences_and_non_headings() {
        let text = "# Guide\nintro\n```\n# not a heading\n```\n##Nope\n## Setup ##\n####### seven";
        let headings = markdown_headings(text);
        let titles: Vec<(&str, u8)> = headings
            .iter()
            .map(|heading| (heading.title.as_str(), heading.level))
            .collect();
        assert_eq!(titles, [("Guide", 1), ("Setup", 2)]);
        assert_eq!(&text[headings[1].offset..headings[1].end], "## Setup ##");
    }

    #[test]
    fn a_heading_replaces_its_level_and_deeper() {
        let mut path = HeadingPath::default();
        let heading = |level: u8, title: &str| Heading {
            offset: 0,
            end: 0,
            level,
            title: title.to_owned(),
        };
        path.enter(&heading(1, "A"));
        path.enter(&heading(2, "B"));
        path.enter(&heading(3, "C"));
        path.enter(&heading(2, "D"));
        assert_eq!(path.titles(), ["A", "D"]);
        path.enter(&heading(1, "E"));
        assert_eq!(path.titles(), ["E"]);
        assert_eq!(
            short_title(&"x ".repeat(1000)).chars().count(),
            MAX_TITLE_CHARS
        );
    }
}
