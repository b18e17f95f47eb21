use std::fs::File;
use std::io::{BufReader, Read};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use docx_rs::{
    DocumentChild, Hyperlink, InsertChild, Paragraph, ParagraphChild, Run, RunChild,
    StructuredDataTag, StructuredDataTagChild, Table, TableCellContent, TableChild, TableRowChild,
};

use super::error::human_bytes;
use super::{ExtractError, ExtractLimits, normalize_text, panic_message};

/// Extracts the main document text of a DOCX: paragraphs, runs, hyperlinks, content controls and tables
/// (one line per row, cells separated by " | "). Headers, footers, footnotes, comments and deleted
/// tracked changes are left out in v1.
pub(super) fn extract_docx(path: &Path, limits: &ExtractLimits) -> Result<String, ExtractError> {
    check_archive(path, limits)?;
    let bytes = std::fs::read(path).map_err(|error| ExtractError::io("read docx", &error))?;
    let parsed =
        catch_unwind(AssertUnwindSafe(|| docx_rs::read_docx(&bytes))).map_err(|payload| {
            ExtractError::ExtractCrashed {
                detail: format!("docx parser panicked: {}", panic_message(payload.as_ref())),
            }
        })?;
    let docx = parsed.map_err(|error| ExtractError::Corrupt {
        detail: format!("DOCX cannot be parsed: {error}"),
    })?;

    let mut writer = TextWriter::default();
    for child in &docx.document.children {
        match child {
            DocumentChild::Paragraph(paragraph) => writer.paragraph(paragraph),
            DocumentChild::Table(table) => writer.table(table),
            DocumentChild::StructuredDataTag(tag) => writer.structured_data_tag(tag),
            _ => {}
        }
    }
    Ok(normalize_text(&writer.output))
}

/// Guards against ZIP bombs before docx-rs inflates anything.
///
/// First the central directory: entry count, each entry's declared uncompressed size, their total, and
/// the compression ratio of large entries. Then every entry is inflated into a sink through a reader
/// capped just above what its header declared, so an archive that lies about its sizes is caught too.
fn check_archive(path: &Path, limits: &ExtractLimits) -> Result<(), ExtractError> {
    let file = File::open(path).map_err(|error| ExtractError::io("open docx", &error))?;
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|error| ExtractError::Corrupt {
            detail: format!("unreadable zip archive: {error}"),
        })?;

    let entry_count = archive.len();
    if entry_count > limits.docx_max_entries {
        return Err(ExtractError::ZipBomb {
            detail: format!(
                "zip has {entry_count} entries, limit {}",
                limits.docx_max_entries
            ),
        });
    }

    let max_bytes = limits.docx_max_uncompressed_bytes;
    let mut declared_sizes = Vec::with_capacity(entry_count);
    let mut declared_total: u64 = 0;
    for index in 0..entry_count {
        let entry = archive
            .by_index_raw(index)
            .map_err(|error| ExtractError::Corrupt {
                detail: format!("zip entry {index} unreadable: {error}"),
            })?;
        let entry_name = entry.name().to_owned();
        let declared_size = entry.size();
        let compressed_size = entry.compressed_size();
        if declared_size > max_bytes {
            return Err(ExtractError::ZipBomb {
                detail: format!(
                    "zip entry {entry_name} declares {} uncompressed, limit {}",
                    human_bytes(declared_size),
                    human_bytes(max_bytes)
                ),
            });
        }
        if declared_size > limits.docx_ratio_min_entry_bytes
            && declared_size / compressed_size.max(1) > limits.docx_max_ratio
        {
            return Err(ExtractError::ZipBomb {
                detail: format!(
                    "zip entry {entry_name} compresses {} into {} (ratio {}), limit ratio {}",
                    human_bytes(declared_size),
                    human_bytes(compressed_size),
                    declared_size / compressed_size.max(1),
                    limits.docx_max_ratio
                ),
            });
        }
        declared_total = declared_total.saturating_add(declared_size);
        if declared_total > max_bytes {
            return Err(ExtractError::ZipBomb {
                detail: format!(
                    "zip entries declare more than {} uncompressed in total, limit {}",
                    human_bytes(declared_total),
                    human_bytes(max_bytes)
                ),
            });
        }
        declared_sizes.push((entry_name, declared_size));
    }

    let mut inflated_total: u64 = 0;
    for (index, (entry_name, declared_size)) in declared_sizes.into_iter().enumerate() {
        let entry = archive.by_index(index).map_err(|error| match error {
            zip::result::ZipError::UnsupportedArchive(message)
                if message.to_lowercase().contains("password") =>
            {
                ExtractError::Encrypted {
                    detail: format!("zip entry {entry_name} is password protected"),
                }
            }
            other => ExtractError::Corrupt {
                detail: format!("zip entry {entry_name} unreadable: {other}"),
            },
        })?;
        // One byte more than allowed tells "exactly at the limit" from "beyond it".
        let mut capped = entry.take(declared_size + 1);
        let inflated = std::io::copy(&mut capped, &mut std::io::sink()).map_err(|error| {
            ExtractError::Corrupt {
                detail: format!("zip entry {entry_name} cannot be inflated: {error}"),
            }
        })?;
        if inflated > declared_size {
            return Err(ExtractError::ZipBomb {
                detail: format!(
                    "zip entry {entry_name} inflates beyond its declared size of {}",
                    human_bytes(declared_size)
                ),
            });
        }
        inflated_total += inflated;
        if inflated_total > max_bytes {
            return Err(ExtractError::ZipBomb {
                detail: format!(
                    "zip entries inflate beyond {} in total",
                    human_bytes(max_bytes)
                ),
            });
        }
    }
    Ok(())
}

/// Collects text with paragraph breaks; `normalize_text` cleans up afterwards.
#[derive(Default)]
struct TextWriter {
    output: String,
}

impl TextWriter {
    fn paragraph(&mut self, paragraph: &Paragraph) {
        for child in &paragraph.children {
            self.paragraph_child(child);
        }
        self.output.push_str("\n\n");
    }

    fn paragraph_child(&mut self, child: &ParagraphChild) {
        match child {
            ParagraphChild::Run(run) => self.run(run),
            ParagraphChild::Insert(insert) => {
                for insert_child in &insert.children {
                    if let InsertChild::Run(run) = insert_child {
                        self.run(run);
                    }
                }
            }
            ParagraphChild::Hyperlink(hyperlink) => self.hyperlink(hyperlink),
            ParagraphChild::StructuredDataTag(tag) => self.structured_data_tag(tag),
            _ => {}
        }
    }

    fn hyperlink(&mut self, hyperlink: &Hyperlink) {
        for child in &hyperlink.children {
            self.paragraph_child(child);
        }
    }

    fn run(&mut self, run: &Run) {
        for child in &run.children {
            match child {
                RunChild::Text(text) => self.output.push_str(&text.text),
                RunChild::Tab(_) | RunChild::PTab(_) => self.output.push(' '),
                RunChild::Break(_) | RunChild::CarriageReturn(_) => self.output.push('\n'),
                _ => {}
            }
        }
    }

    fn structured_data_tag(&mut self, tag: &StructuredDataTag) {
        for child in &tag.children {
            match child {
                StructuredDataTagChild::Run(run) => self.run(run),
                StructuredDataTagChild::Paragraph(paragraph) => self.paragraph(paragraph),
                StructuredDataTagChild::Table(table) => self.table(table),
                StructuredDataTagChild::StructuredDataTag(inner) => self.structured_data_tag(inner),
                _ => {}
            }
        }
    }

    /// One line per row, cells separated by " | ", paragraphs inside a cell joined by spaces.
    fn table(&mut self, table: &Table) {
        for TableChild::TableRow(row) in &table.rows {
            let mut first_cell = true;
            for TableRowChild::TableCell(cell) in &row.cells {
                if !first_cell {
                    self.output.push_str(" | ");
                }
                first_cell = false;
                let mut cell_writer = TextWriter::default();
                for content in &cell.children {
                    match content {
                        TableCellContent::Paragraph(paragraph) => cell_writer.paragraph(paragraph),
                        TableCellContent::Table(inner) => cell_writer.table(inner),
                        TableCellContent::StructuredDataTag(tag) => {
                            cell_writer.structured_data_tag(tag)
                        }
                        TableCellContent::TableOfContents(_) => {}
                    }
                }
                let cell_text = cell_writer
                    .output
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                self.output.push_str(&cell_text);
            }
            self.output.push('\n');
        }
        self.output.push('\n');
    }
}
