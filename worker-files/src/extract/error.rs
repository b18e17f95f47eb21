use serde::{Deserialize, Serialize};

/// Why a file could not be turned into text.
///
/// Every variant but [`ExtractError::Io`] is a property of the document (or of how it behaved in the
/// sandbox) and is permanent: retrying gives the same answer. `detail` is a human-readable sentence
/// that says what was wrong; [`ExtractError::code`] is the stable machine code stored on the row.
///
/// Serialized as `{"code": "...", "detail": "..."}`, which is also how the child reports to the parent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ExtractError {
    /// Not a kind we extract (random binary, images, a ZIP that is not a DOCX, legacy Office files).
    #[error("unsupported file type: {detail}")]
    UnsupportedType { detail: String },
    /// Password protected. We do not decrypt in v1, not even PDFs with an empty user password.
    #[error("encrypted document: {detail}")]
    Encrypted { detail: String },
    /// The parser could not read the structure of the file.
    #[error("corrupt document: {detail}")]
    Corrupt { detail: String },
    /// Too many pages, or too much text.
    #[error("document too large: {detail}")]
    TooLarge { detail: String },
    /// The archive would inflate beyond the limits, or lies about its sizes.
    #[error("zip bomb: {detail}")]
    ZipBomb { detail: String },
    /// The document has no text (for PDFs usually a scan without a text layer).
    #[error("no text: {detail}")]
    EmptyText { detail: String },
    /// The extraction child ran out of wall-clock or CPU time and was killed.
    #[error("extraction timed out: {detail}")]
    ExtractTimeout { detail: String },
    /// The extractor panicked, overflowed its stack, ran out of memory or died by a signal.
    #[error("extraction crashed: {detail}")]
    ExtractCrashed { detail: String },
    /// Local I/O failed (reading the file, starting the child). Not a property of the document:
    /// callers should treat it as transient.
    #[error("extraction i/o error: {detail}")]
    Io { detail: String },
}

impl ExtractError {
    /// Stable machine code of the error, stored in the database and exposed by the API.
    pub fn code(&self) -> &'static str {
        match self {
            ExtractError::UnsupportedType { .. } => "unsupported_type",
            ExtractError::Encrypted { .. } => "encrypted",
            ExtractError::Corrupt { .. } => "corrupt",
            ExtractError::TooLarge { .. } => "too_large",
            ExtractError::ZipBomb { .. } => "zip_bomb",
            ExtractError::EmptyText { .. } => "empty_text",
            ExtractError::ExtractTimeout { .. } => "extract_timeout",
            ExtractError::ExtractCrashed { .. } => "extract_crashed",
            ExtractError::Io { .. } => "io_error",
        }
    }

    /// True when retrying cannot help (everything but local I/O).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, ExtractError::Io { .. })
    }

    /// The human-readable detail without the category prefix of `Display`.
    pub fn detail(&self) -> &str {
        match self {
            ExtractError::UnsupportedType { detail }
            | ExtractError::Encrypted { detail }
            | ExtractError::Corrupt { detail }
            | ExtractError::TooLarge { detail }
            | ExtractError::ZipBomb { detail }
            | ExtractError::EmptyText { detail }
            | ExtractError::ExtractTimeout { detail }
            | ExtractError::ExtractCrashed { detail }
            | ExtractError::Io { detail } => detail,
        }
    }

    pub(super) fn io(context: &str, error: &std::io::Error) -> ExtractError {
        ExtractError::Io {
            detail: format!("{context}: {error}"),
        }
    }
}

/// Formats a byte count for messages: "2.1 GiB", "256 MiB", "512 bytes".
pub(super) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit_index = 0;
    while value >= 1024.0 && unit_index + 1 < UNITS.len() {
        value /= 1024.0;
        unit_index += 1;
    }
    let unit = UNITS[unit_index];
    if (value - value.round()).abs() < 0.05 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}
