use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

use super::archive::CheckedArchive;
use super::error::human_bytes;
use super::ooxml::attribute;
use super::structure::{HEADING_END_MARK, heading_start_mark, scrub_marks, take_heading_marks};
use super::{ExtractError, ExtractLimits, Page, TextPart, normalize_text};

/// The parts of a DOCX that hold text, in the order they are read.
const TEXT_PARTS: [(&str, TextPart); 6] = [
    ("document", TextPart::Body),
    ("header", TextPart::Header),
    ("footer", TextPart::Footer),
    ("footnotes", TextPart::Footnote),
    ("endnotes", TextPart::Endnote),
    ("comments", TextPart::Comment),
];

/// Extracts every text-bearing part of a DOCX, each labelled: the body (paragraphs, runs, hyperlinks,
/// content controls), its tables (one line per row, cells separated by " | "), text boxes, headers,
/// footers, footnotes, endnotes and comments. Deleted tracked changes and field codes are left out.
///
/// Only `[Content_Types].xml`, `_rels/.rels` and `word/document.xml` need to exist: a minimal DOCX that
/// Word opens is read, and one without text is `empty_text`, not `corrupt`.
///
/// One inflation path: the central directory is checked first (entry count, each declared size, their
/// total, the ratio of large entries), then each text part is inflated through a reader capped just above
/// its declared size, and *those* bytes are parsed, so an archive that lies about its sizes is caught on
/// the very bytes that would be read. XML is read with a streaming reader that never reads a DTD or
/// expands an entity: `&name;` other than the five predefined ones stays literal text.
pub(super) fn extract_docx(path: &Path, limits: &ExtractLimits) -> Result<Vec<Page>, ExtractError> {
    let mut archive = CheckedArchive::open(path, limits)?;
    let mut parts: Vec<(usize, TextPart)> = Vec::new();
    for (stem, part) in TEXT_PARTS.iter() {
        let entries = archive.entries();
        let mut matching: Vec<usize> = (0..entries.len())
            .filter(|position| is_text_part(&entries[*position].name, stem))
            .collect();
        matching.sort_by(|left, right| {
            natural_key(&entries[*left].name).cmp(&natural_key(&entries[*right].name))
        });
        parts.extend(matching.into_iter().map(|position| (position, *part)));
    }
    if !parts.iter().any(|(_, part)| *part == TextPart::Body) {
        return Err(ExtractError::UnsupportedType {
            detail: "zip archive that is not a DOCX (no word/document.xml entry)".to_owned(),
        });
    }

    let mut writer = PartWriter::new(limits.max_text_bytes);
    for (position, part) in parts {
        let bytes = archive.inflate(position)?;
        let part_name = archive.entries()[position].name.clone();
        walk_part(&bytes, &part_name, part, &mut writer)?;
    }
    Ok(writer.finish())
}

/// `word/document.xml`, `word/header2.xml`, ... for stem `document`, `header`, ...
fn is_text_part(name: &str, stem: &str) -> bool {
    let Some(file_name) = name.strip_prefix("word/") else {
        return false;
    };
    let Some(rest) = file_name.strip_prefix(stem) else {
        return false;
    };
    let Some(number) = rest.strip_suffix(".xml") else {
        return false;
    };
    match stem {
        "header" | "footer" => number.bytes().all(|byte| byte.is_ascii_digit()),
        _ => number.is_empty(),
    }
}

/// `header10` after `header9`.
fn natural_key(name: &str) -> (usize, &str) {
    (name.len(), name)
}

/// Collects the text of every part, one [`Page`] per run of text with the same label.
struct PartWriter {
    pages: Vec<Page>,
    current_part: TextPart,
    current: String,
    written_bytes: u64,
    max_bytes: u64,
}

impl PartWriter {
    fn new(max_bytes: u64) -> PartWriter {
        PartWriter {
            pages: Vec::new(),
            current_part: TextPart::Body,
            current: String::new(),
            written_bytes: 0,
            max_bytes,
        }
    }

    fn push(&mut self, part: TextPart, text: &str) -> Result<(), ExtractError> {
        if part != self.current_part {
            self.flush();
            self.current_part = part;
        }
        self.written_bytes += text.len() as u64;
        if self.written_bytes > self.max_bytes.saturating_mul(2) {
            return Err(ExtractError::TooLarge {
                detail: format!("DOCX text exceeds {}", human_bytes(self.max_bytes)),
            });
        }
        self.current.push_str(text);
        Ok(())
    }

    /// A heading mark (see [`super::structure`]); it counts as no text.
    fn push_mark(&mut self, part: TextPart, mark: char) -> Result<(), ExtractError> {
        let mut buffer = [0u8; 4];
        self.push(part, mark.encode_utf8(&mut buffer))
    }

    fn flush(&mut self) {
        let (text, headings) =
            take_heading_marks(&normalize_text(&std::mem::take(&mut self.current)));
        if text.is_empty() {
            return;
        }
        self.pages.push(Page {
            part: Some(self.current_part),
            headings,
            ..Page::new(None, text)
        });
    }

    /// The labelled texts; a document without text gives one empty body page (`empty_text` later).
    fn finish(mut self) -> Vec<Page> {
        self.flush();
        if self.pages.is_empty() {
            self.pages.push(Page::new(None, String::new()));
        }
        self.pages
    }
}

/// Where the reader is inside one part.
struct WalkState {
    base_part: TextPart,
    /// Inside `<w:t>`: its text is document text (`<w:delText>` and `<w:instrText>` are not).
    in_text: bool,
    table_depth: usize,
    text_box_depth: usize,
    /// Per open table row: whether it has had a cell yet.
    row_has_cell: Vec<bool>,
    /// Inside `<mc:Fallback>` (the same content again, for old readers): counts open elements.
    skipped_depth: usize,
    /// The current body paragraph has a heading style: its text is wrapped in heading marks.
    heading_open: bool,
}

impl WalkState {
    fn part(&self) -> TextPart {
        if self.text_box_depth > 0 {
            TextPart::TextBox
        } else if self.table_depth > 0 && self.base_part == TextPart::Body {
            TextPart::Table
        } else {
            self.base_part
        }
    }
}

/// Streams one part's XML into `writer`.
fn walk_part(
    bytes: &[u8],
    part_name: &str,
    base_part: TextPart,
    writer: &mut PartWriter,
) -> Result<(), ExtractError> {
    let mut reader = Reader::from_reader(bytes);
    reader.config_mut().check_end_names = true;
    let mut state = WalkState {
        base_part,
        in_text: false,
        table_depth: 0,
        text_box_depth: 0,
        row_has_cell: Vec::new(),
        skipped_depth: 0,
        heading_open: false,
    };
    let corrupt = |error: &dyn std::fmt::Display| ExtractError::Corrupt {
        detail: format!("DOCX part {part_name} is not well-formed XML: {error}"),
    };
    loop {
        let event = reader.read_event().map_err(|error| corrupt(&error))?;
        if state.skipped_depth > 0 {
            match event {
                Event::Start(_) => state.skipped_depth += 1,
                Event::End(_) => state.skipped_depth -= 1,
                Event::Eof => break,
                _ => {}
            }
            continue;
        }
        match event {
            Event::Start(element) => start_element(&element, &mut state, writer)?,
            Event::Empty(element) => empty_element(&element, &mut state, writer)?,
            Event::End(element) => match element.local_name().as_ref() {
                b"t" => state.in_text = false,
                b"p" => {
                    if state.heading_open {
                        state.heading_open = false;
                        writer.push_mark(state.part(), HEADING_END_MARK)?;
                    }
                    writer.push(state.part(), paragraph_end(&state))?;
                }
                b"tr" => {
                    state.row_has_cell.pop();
                    writer.push(state.part(), "\n")?;
                }
                b"tbl" => {
                    writer.push(state.part(), "\n\n")?;
                    state.table_depth = state.table_depth.saturating_sub(1);
                }
                b"txbxContent" => {
                    writer.push(state.part(), "\n\n")?;
                    state.text_box_depth = state.text_box_depth.saturating_sub(1);
                }
                _ => {}
            },
            Event::Text(text) if state.in_text => {
                let decoded = text.decode().map_err(|error| corrupt(&error))?;
                writer.push(state.part(), &scrub_marks(&decoded))?;
            }
            Event::GeneralRef(reference) if state.in_text => {
                let resolved = resolve_reference(&reference).map_err(|error| corrupt(&error))?;
                writer.push(state.part(), &scrub_marks(&resolved))?;
            }
            Event::Eof => break,
            // A DOCTYPE is never read: its entities stay undefined, so nothing expands.
            _ => {}
        }
    }
    Ok(())
}

fn start_element(
    element: &BytesStart<'_>,
    state: &mut WalkState,
    writer: &mut PartWriter,
) -> Result<(), ExtractError> {
    match element.local_name().as_ref() {
        b"Fallback" => state.skipped_depth = 1,
        b"t" => state.in_text = true,
        b"tbl" => state.table_depth += 1,
        b"tr" => state.row_has_cell.push(false),
        b"tc" => {
            let part = state.part();
            if let Some(has_cell) = state.row_has_cell.last_mut() {
                if *has_cell {
                    writer.push(part, " | ")?;
                }
                *has_cell = true;
            }
        }
        b"txbxContent" => {
            writer.push(state.part(), "\n\n")?;
            state.text_box_depth += 1;
        }
        // A paragraph's break comes at its end.
        b"p" => state.heading_open = false,
        _ => empty_element(element, state, writer)?,
    }
    Ok(())
}

/// What ends a paragraph: a space inside a table cell (one line per row), a blank line elsewhere.
fn paragraph_end(state: &WalkState) -> &'static str {
    if state.table_depth > 0 && state.text_box_depth == 0 {
        " "
    } else {
        "\n\n"
    }
}

/// Elements that stand for a character whether written `<x/>` or `<x></x>`, and the
/// paragraph properties that make a body paragraph a heading.
fn empty_element(
    element: &BytesStart<'_>,
    state: &mut WalkState,
    writer: &mut PartWriter,
) -> Result<(), ExtractError> {
    match element.local_name().as_ref() {
        b"pStyle" | b"outlineLvl" if state.part() == TextPart::Body => {
            let Some(level) = heading_level(element) else {
                return Ok(());
            };
            state.heading_open = true;
            writer.push_mark(state.part(), heading_start_mark(level))
        }
        b"tab" | b"ptab" => writer.push(state.part(), " "),
        b"br" | b"cr" => writer.push(state.part(), "\n"),
        b"noBreakHyphen" => writer.push(state.part(), "-"),
        b"p" => writer.push(state.part(), paragraph_end(state)),
        _ => Ok(()),
    }
}

/// The heading level a paragraph property gives: style ids `Title` (1) and `Heading1` ..
/// `Heading9` (any case), or an outline level `0` .. `8` (1 .. 9).
fn heading_level(element: &BytesStart<'_>) -> Option<u8> {
    let value = attribute(element, b"val")?.to_ascii_lowercase();
    if element.local_name().as_ref() == b"outlineLvl" {
        let outline_level: u8 = value.parse().ok()?;
        return (outline_level < 9).then_some(outline_level + 1);
    }
    if value == "title" {
        return Some(1);
    }
    let level: u8 = value.strip_prefix("heading")?.parse().ok()?;
    (1..=9).contains(&level).then_some(level)
}

/// `&#233;` and the five predefined entities resolve; any other `&name;` stays as written.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<String, quick_xml::Error> {
    if let Some(character) = reference.resolve_char_ref()? {
        return Ok(character.to_string());
    }
    let name = reference.decode().map_err(quick_xml::Error::from)?;
    let predefined = match name.as_ref() {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        other => return Ok(format!("&{other};")),
    };
    Ok(predefined.to_owned())
}
