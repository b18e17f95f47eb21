//! The one way a ZIP-based document (DOCX, PPTX, XLSX, EPUB) is opened and inflated.
//!
//! The central directory is checked first (entry count, each declared size, their total,
//! the ratio of large entries); then each entry that is parsed is inflated through a reader
//! capped one byte above its declared size, and the running total is checked again, so an
//! archive that lies about its sizes is caught on the very bytes that would be read. The
//! limits are [`ExtractLimits`]' `docx_*` fields (named for the first ZIP format; they apply
//! to every one).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::error::human_bytes;
use super::{ExtractError, ExtractLimits};

/// An archive whose central directory passed the checks.
pub(super) struct CheckedArchive {
    archive: zip::ZipArchive<BufReader<File>>,
    entries: Vec<EntryInfo>,
    inflated_total: u64,
    limits: ExtractLimits,
}

impl CheckedArchive {
    /// Opens `path` (`corrupt` when it is no readable ZIP) and checks its central directory.
    pub(super) fn open(
        path: &Path,
        limits: &ExtractLimits,
    ) -> Result<CheckedArchive, ExtractError> {
        let file =
            File::open(path).map_err(|error| ExtractError::io("open zip archive", &error))?;
        let mut archive =
            zip::ZipArchive::new(BufReader::new(file)).map_err(|error| ExtractError::Corrupt {
                detail: format!("unreadable zip archive: {error}"),
            })?;
        let entries = check_central_directory(&mut archive, limits)?;
        Ok(CheckedArchive {
            archive,
            entries,
            inflated_total: 0,
            limits: limits.clone(),
        })
    }

    pub(super) fn entries(&self) -> &[EntryInfo] {
        &self.entries
    }

    /// The entry named exactly `name`.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|entry| entry.name == name)
    }

    /// Inflates the entry at `position` (in [`CheckedArchive::entries`]) within the limits.
    pub(super) fn inflate(&mut self, position: usize) -> Result<Vec<u8>, ExtractError> {
        let entry = &self.entries[position];
        inflate_capped(
            &mut self.archive,
            entry,
            &self.limits,
            &mut self.inflated_total,
        )
    }

    /// Inflates the entry named `name`; `corrupt` when the archive has none.
    pub(super) fn inflate_named(
        &mut self,
        name: &str,
        what: &str,
    ) -> Result<Vec<u8>, ExtractError> {
        let position = self.find(name).ok_or_else(|| ExtractError::Corrupt {
            detail: format!("{what} has no {name} entry"),
        })?;
        self.inflate(position)
    }
}

/// One entry of the central directory, as declared.
pub(super) struct EntryInfo {
    index: usize,
    pub name: String,
    declared_size: u64,
}

/// Entry count, declared sizes, their total and the ratio of large entries, from the central directory.
fn check_central_directory(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    limits: &ExtractLimits,
) -> Result<Vec<EntryInfo>, ExtractError> {
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
    let mut entries = Vec::with_capacity(entry_count);
    let mut declared_total: u64 = 0;
    for index in 0..entry_count {
        let entry = archive
            .by_index_raw(index)
            .map_err(|error| ExtractError::Corrupt {
                detail: format!("zip entry {index} unreadable: {error}"),
            })?;
        let name = entry.name().to_owned();
        let declared_size = entry.size();
        let compressed_size = entry.compressed_size();
        if declared_size > max_bytes {
            return Err(ExtractError::ZipBomb {
                detail: format!(
                    "zip entry {name} declares {} uncompressed, limit {}",
                    human_bytes(declared_size),
                    human_bytes(max_bytes)
                ),
            });
        }
        let ratio = declared_size / compressed_size.max(1);
        if declared_size > limits.docx_ratio_min_entry_bytes && ratio > limits.docx_max_ratio {
            return Err(ExtractError::ZipBomb {
                detail: format!(
                    "zip entry {name} compresses {} into {} (ratio {ratio}), limit ratio {}",
                    human_bytes(declared_size),
                    human_bytes(compressed_size),
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
        entries.push(EntryInfo {
            index,
            name,
            declared_size,
        });
    }
    Ok(entries)
}

/// Inflates one entry through a reader capped one byte above its declared size.
fn inflate_capped(
    archive: &mut zip::ZipArchive<BufReader<File>>,
    entry_info: &EntryInfo,
    limits: &ExtractLimits,
    inflated_total: &mut u64,
) -> Result<Vec<u8>, ExtractError> {
    let name = &entry_info.name;
    let entry = archive
        .by_index(entry_info.index)
        .map_err(|error| match error {
            zip::result::ZipError::UnsupportedArchive(message)
                if message.to_lowercase().contains("password") =>
            {
                ExtractError::Encrypted {
                    detail: format!("zip entry {name} is password protected"),
                }
            }
            other => ExtractError::Corrupt {
                detail: format!("zip entry {name} unreadable: {other}"),
            },
        })?;
    let declared_size = entry_info.declared_size;
    // One byte more than allowed tells "exactly at the limit" from "beyond it".
    let mut capped = entry.take(declared_size + 1);
    let mut bytes = Vec::with_capacity(usize::try_from(declared_size.min(64 << 20)).unwrap_or(0));
    capped
        .read_to_end(&mut bytes)
        .map_err(|error| ExtractError::Corrupt {
            detail: format!("zip entry {name} cannot be inflated: {error}"),
        })?;
    if bytes.len() as u64 > declared_size {
        return Err(ExtractError::ZipBomb {
            detail: format!(
                "zip entry {name} inflates beyond its declared size of {}",
                human_bytes(declared_size)
            ),
        });
    }
    *inflated_total += bytes.len() as u64;
    if *inflated_total > limits.docx_max_uncompressed_bytes {
        return Err(ExtractError::ZipBomb {
            detail: format!(
                "zip entries inflate beyond {} in total",
                human_bytes(limits.docx_max_uncompressed_bytes)
            ),
        });
    }
    Ok(bytes)
}
