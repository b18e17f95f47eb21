//! XLSX and CSV: one page per sheet (a CSV file is one sheet), rows as text.
//!
//! The first non-empty row is the header row. It is written once as a line of its own,
//! and every later row is written as `header: value` pairs separated by " | ", so any
//! chunk of a sheet, wherever the chunker cuts it, carries the column names of its values.
//! A sheet's name is its page's heading.
//!
//! XLSX is read with the same capped inflation as DOCX ([`CheckedArchive`]) and a streaming
//! XML reader: the workbook's sheet list, the shared strings, then each sheet's rows. CSV
//! is parsed in one pass (RFC 4180 quoting; the delimiter is the one of `,` `;` tab that
//! the first line uses most).

use std::path::Path;

use quick_xml::Reader;
use quick_xml::events::Event;

use super::archive::CheckedArchive;
use super::error::human_bytes;
use super::ooxml::{attribute, not_well_formed, relationships, resolve_part_path};
use super::structure::{HEADING_END_MARK, heading_start_mark, scrub_marks};
use super::{ExtractError, ExtractLimits, Page, normalize_text};

const WORKBOOK: &str = "xl/workbook.xml";
const WORKBOOK_RELS: &str = "xl/_rels/workbook.xml.rels";
const SHARED_STRINGS: &str = "xl/sharedStrings.xml";
/// Columns beyond Excel's last (`XFD`) are ignored.
const MAX_COLUMNS: usize = 16_384;

/// Writes rows as text, with the header row's names carried into every later row.
struct SheetWriter {
    text: String,
    headers: Option<Vec<String>>,
    max_bytes: u64,
}

impl SheetWriter {
    fn new(sheet_name: Option<&str>, max_bytes: u64) -> SheetWriter {
        let mut text = String::new();
        if let Some(name) = sheet_name.filter(|name| !name.trim().is_empty()) {
            text.push(heading_start_mark(1));
            text.push_str(&scrub_marks(name));
            text.push(HEADING_END_MARK);
            text.push_str("\n\n");
        }
        SheetWriter {
            text,
            headers: None,
            max_bytes,
        }
    }

    /// One row: `(0-based column, value)` pairs in column order.
    fn row(&mut self, cells: &[(usize, String)]) -> Result<(), ExtractError> {
        let cells: Vec<&(usize, String)> = cells
            .iter()
            .filter(|(_, value)| !value.trim().is_empty())
            .collect();
        if cells.is_empty() {
            return Ok(());
        }
        let Some(headers) = &self.headers else {
            let width = cells
                .last()
                .map_or(0, |(column, _)| column + 1)
                .min(MAX_COLUMNS);
            let mut headers = vec![String::new(); width];
            for (column, value) in &cells {
                if let Some(slot) = headers.get_mut(*column) {
                    *slot = one_line(value);
                }
            }
            let line: Vec<&str> = cells.iter().map(|(_, value)| value.as_str()).collect();
            self.push_line(&one_line(&line.join(" | ")))?;
            self.headers = Some(headers);
            return Ok(());
        };
        let mut line = String::new();
        for (column, value) in cells {
            if !line.is_empty() {
                line.push_str(" | ");
            }
            if let Some(header) = headers.get(*column).filter(|header| !header.is_empty()) {
                line.push_str(header);
                line.push_str(": ");
            }
            line.push_str(&one_line(value));
        }
        self.push_line(&line)
    }

    fn push_line(&mut self, line: &str) -> Result<(), ExtractError> {
        self.text.push_str(&scrub_marks(line));
        self.text.push('\n');
        if self.text.len() as u64 > self.max_bytes {
            return Err(ExtractError::TooLarge {
                detail: format!("sheet text exceeds {}", human_bytes(self.max_bytes)),
            });
        }
        Ok(())
    }

    fn finish(self, number: Option<u32>) -> Page {
        Page::with_marked_headings(number, &normalize_text(&self.text))
    }
}

/// A cell value on one line (line breaks inside a cell become spaces).
fn one_line(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(super) fn extract_xlsx(path: &Path, limits: &ExtractLimits) -> Result<Vec<Page>, ExtractError> {
    let mut archive = CheckedArchive::open(path, limits)?;
    if archive.find(WORKBOOK).is_none() {
        return Err(ExtractError::UnsupportedType {
            detail: "zip archive that is not an XLSX (no xl/workbook.xml entry)".to_owned(),
        });
    }
    let sheets = workbook_sheets(&mut archive)?;
    let shared_strings = match archive.find(SHARED_STRINGS) {
        Some(entry) => read_shared_strings(&archive.inflate(entry)?, limits)?,
        None => Vec::new(),
    };
    let mut pages = Vec::new();
    let mut remaining_bytes = limits.max_text_bytes;
    for (position, (name, sheet_path)) in sheets.iter().enumerate() {
        let Some(entry) = archive.find(sheet_path) else {
            continue;
        };
        let sheet_xml = archive.inflate(entry)?;
        let mut writer = SheetWriter::new(Some(name), remaining_bytes);
        read_sheet_rows(&sheet_xml, sheet_path, &shared_strings, &mut writer)?;
        remaining_bytes = remaining_bytes.saturating_sub(writer.text.len() as u64);
        pages.push(writer.finish(Some(u32::try_from(position + 1).unwrap_or(u32::MAX))));
    }
    if pages.is_empty() {
        pages.push(Page::new(None, String::new()));
    }
    Ok(pages)
}

/// `(sheet name, part path)` in workbook order.
fn workbook_sheets(archive: &mut CheckedArchive) -> Result<Vec<(String, String)>, ExtractError> {
    let workbook = archive.inflate_named(WORKBOOK, "XLSX")?;
    let mut declared = Vec::new();
    let mut reader = Reader::from_reader(workbook.as_slice());
    loop {
        match reader
            .read_event()
            .map_err(|error| not_well_formed(WORKBOOK, &error))?
        {
            Event::Start(element) | Event::Empty(element)
                if element.local_name().as_ref() == b"sheet" =>
            {
                let name = attribute(&element, b"name").unwrap_or_default();
                if let Some(relationship_id) = attribute(&element, b"id") {
                    declared.push((name, relationship_id));
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let relationships = match archive.find(WORKBOOK_RELS) {
        Some(entry) => relationships(&archive.inflate(entry)?, WORKBOOK_RELS)?,
        None => Vec::new(),
    };
    Ok(declared
        .into_iter()
        .filter_map(|(name, relationship_id)| {
            let relationship = relationships
                .iter()
                .find(|relationship| relationship.id == relationship_id)?;
            Some((name, resolve_part_path("xl", &relationship.target)))
        })
        .collect())
}

/// The shared string table: each `si`'s text runs joined (phonetic `rPh` runs left out).
fn read_shared_strings(bytes: &[u8], limits: &ExtractLimits) -> Result<Vec<String>, ExtractError> {
    let mut reader = Reader::from_reader(bytes);
    let mut strings = Vec::new();
    let mut current = String::new();
    let mut in_text = false;
    let mut phonetic_depth = 0usize;
    let mut total: u64 = 0;
    loop {
        let event = reader
            .read_event()
            .map_err(|error| not_well_formed(SHARED_STRINGS, &error))?;
        match event {
            Event::Start(element) => match element.local_name().as_ref() {
                b"t" => in_text = true,
                b"rPh" => phonetic_depth += 1,
                b"si" => current.clear(),
                _ => {}
            },
            Event::Empty(element) if element.local_name().as_ref() == b"si" => {
                strings.push(String::new());
            }
            Event::End(element) => match element.local_name().as_ref() {
                b"t" => in_text = false,
                b"rPh" => phonetic_depth = phonetic_depth.saturating_sub(1),
                b"si" => strings.push(std::mem::take(&mut current)),
                _ => {}
            },
            Event::Text(text) if in_text && phonetic_depth == 0 => {
                let decoded = text
                    .decode()
                    .map_err(|error| not_well_formed(SHARED_STRINGS, &error))?;
                total += decoded.len() as u64;
                if total > limits.max_text_bytes.saturating_mul(2) {
                    return Err(ExtractError::TooLarge {
                        detail: format!(
                            "shared strings exceed {}",
                            human_bytes(limits.max_text_bytes)
                        ),
                    });
                }
                current.push_str(&decoded);
            }
            Event::GeneralRef(reference) if in_text && phonetic_depth == 0 => {
                current.push_str(&predefined_reference(&reference));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(strings)
}

fn predefined_reference(reference: &quick_xml::events::BytesRef<'_>) -> String {
    if let Ok(Some(character)) = reference.resolve_char_ref() {
        return character.to_string();
    }
    let Ok(name) = reference.decode() else {
        return String::new();
    };
    match name.as_ref() {
        "lt" => "<",
        "gt" => ">",
        "amp" => "&",
        "apos" => "'",
        "quot" => "\"",
        _ => "",
    }
    .to_owned()
}

/// `B7` gives column 1 (0-based); `None` when the reference has no letters.
fn column_of(reference: &str) -> Option<usize> {
    let letters: Vec<u8> = reference
        .bytes()
        .take_while(u8::is_ascii_alphabetic)
        .collect();
    if letters.is_empty() || letters.len() > 3 {
        return None;
    }
    let mut column = 0usize;
    for letter in letters {
        column = column * 26 + usize::from(letter.to_ascii_uppercase() - b'A') + 1;
    }
    Some(column - 1)
}

/// Streams a worksheet's rows into `writer`.
fn read_sheet_rows(
    bytes: &[u8],
    part_name: &str,
    shared_strings: &[String],
    writer: &mut SheetWriter,
) -> Result<(), ExtractError> {
    let mut reader = Reader::from_reader(bytes);
    let mut cells: Vec<(usize, String)> = Vec::new();
    let mut cell_column = 0usize;
    let mut cell_type = String::new();
    let mut value = String::new();
    // Inside `<v>` (a value) or `<is><t>` (an inline string).
    let mut in_value = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|error| not_well_formed(part_name, &error))?;
        match event {
            Event::Start(element) => match element.local_name().as_ref() {
                b"row" => cells.clear(),
                b"c" => {
                    let next_column = cells.last().map_or(0, |(column, _)| column + 1);
                    cell_column = attribute(&element, b"r")
                        .and_then(|reference| column_of(&reference))
                        .unwrap_or(next_column);
                    cell_type = attribute(&element, b"t").unwrap_or_default();
                    value.clear();
                }
                b"v" | b"t" => in_value = true,
                _ => {}
            },
            Event::End(element) => match element.local_name().as_ref() {
                b"v" | b"t" => in_value = false,
                b"c" => {
                    let shown = match cell_type.as_str() {
                        "s" => {
                            let index = value.trim().parse::<usize>().ok();
                            match index.and_then(|index| shared_strings.get(index)) {
                                Some(shared) => shared.clone(),
                                None => {
                                    return Err(ExtractError::Corrupt {
                                        detail: format!(
                                            "{part_name}: a cell refers to shared string {:?}, the table has {}",
                                            value.trim(),
                                            shared_strings.len()
                                        ),
                                    });
                                }
                            }
                        }
                        "b" => match value.trim() {
                            "1" => "TRUE".to_owned(),
                            "0" => "FALSE".to_owned(),
                            other => other.to_owned(),
                        },
                        _ => std::mem::take(&mut value),
                    };
                    if cell_column < MAX_COLUMNS {
                        cells.push((cell_column, shown));
                    }
                    value.clear();
                }
                b"row" => {
                    cells.sort_by_key(|(column, _)| *column);
                    writer.row(&cells)?;
                    cells.clear();
                }
                _ => {}
            },
            Event::Text(text) if in_value => {
                let decoded = text
                    .decode()
                    .map_err(|error| not_well_formed(part_name, &error))?;
                value.push_str(&decoded);
            }
            Event::GeneralRef(reference) if in_value => {
                value.push_str(&predefined_reference(&reference));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(())
}

/// A CSV file (already decoded) as one sheet.
pub(super) fn csv_page(source: &str, limits: &ExtractLimits) -> Result<Page, ExtractError> {
    let delimiter = sniff_delimiter(source);
    let mut writer = SheetWriter::new(None, limits.max_text_bytes);
    let mut cells: Vec<(usize, String)> = Vec::new();
    let mut field = String::new();
    let mut in_quotes = false;
    let mut characters = source.chars().peekable();
    while let Some(character) = characters.next() {
        if in_quotes {
            if character == '"' {
                if characters.peek() == Some(&'"') {
                    characters.next();
                    field.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(character);
            }
            continue;
        }
        match character {
            '"' if field.is_empty() => in_quotes = true,
            '\r' => {}
            '\n' => {
                cells.push((cells.len(), std::mem::take(&mut field)));
                writer.row(&cells)?;
                cells.clear();
            }
            other if other == delimiter => {
                if cells.len() < MAX_COLUMNS {
                    cells.push((cells.len(), std::mem::take(&mut field)));
                } else {
                    field.clear();
                }
            }
            other => field.push(other),
        }
    }
    if !field.is_empty() || !cells.is_empty() {
        cells.push((cells.len(), field));
        writer.row(&cells)?;
    }
    Ok(writer.finish(None))
}

/// The one of `,` `;` tab that the first line (outside quotes) holds most; `,` by default.
fn sniff_delimiter(source: &str) -> char {
    let first_line = source.lines().next().unwrap_or_default();
    let mut counts = [(',', 0usize), (';', 0), ('\t', 0)];
    let mut in_quotes = false;
    for character in first_line.chars() {
        if character == '"' {
            in_quotes = !in_quotes;
        } else if !in_quotes
            && let Some(count) = counts
                .iter_mut()
                .find(|(delimiter, _)| *delimiter == character)
        {
            count.1 += 1;
        }
    }
    counts
        .iter()
        .max_by_key(|(delimiter, count)| (*count, *delimiter == ','))
        .filter(|(_, count)| *count > 0)
        .map_or(',', |(delimiter, _)| *delimiter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_carry_their_headers_and_quotes_are_honoured() {
        let source = "name;city;note\nAda;London;\"likes \"\"maths\"\"; and engines\"\nAlan;;\"two\nlines\"\n";
        let page = csv_page(source, &ExtractLimits::default()).unwrap();
        assert_eq!(
            page.text,
            "name | city | note\nname: Ada | city: London | note: likes \"maths\"; and engines\nname: Alan | note: two lines"
        );
    }

    #[test]
    fn column_references_read_as_letters() {
        assert_eq!(column_of("A1"), Some(0));
        assert_eq!(column_of("Z9"), Some(25));
        assert_eq!(column_of("AA10"), Some(26));
        assert_eq!(column_of("XFD1"), Some(16_383));
        assert_eq!(column_of("17"), None);
    }
}
