//! The retry decision every job handler returns.
//!
//! A handler never deletes or delays a message itself: it says *what went wrong* and
//! whether trying again can help, and the queue layer ([`crate::worker`]) is the one place
//! that turns that into delete, change-visibility or dead-letter.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Trying again cannot help: the row is failed with this code and the message deleted.
    #[error("{code}: {message}")]
    Permanent { code: String, message: String },
    /// Trying again may help (network, throttling, a restarting database): the message
    /// comes back after a backoff, and goes to the DLQ after `maxReceiveCount`.
    #[error("{code}: {message}")]
    Transient {
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The job's fenced lease is no longer ours (another worker took over, or the job was
    /// deleted or restarted): stop without writing, and leave the message to its new owner.
    #[error("lease lost: {message}")]
    LeaseLost { message: String },
}

impl JobError {
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn transient(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Transient {
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Self::Permanent { code, .. } | Self::Transient { code, .. } => code,
            Self::LeaseLost { .. } => "lease_lost",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Permanent { message, .. }
            | Self::Transient { message, .. }
            | Self::LeaseLost { message } => message,
        }
    }

    /// `permanent`, `transient` or `lease_lost`, as recorded on rows and in metrics.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Permanent { .. } => "permanent",
            Self::Transient { .. } => "transient",
            Self::LeaseLost { .. } => "lease_lost",
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

impl From<sqlx::Error> for JobError {
    fn from(error: sqlx::Error) -> Self {
        // Database trouble is transient: the message comes back and the job resumes from
        // what was committed.
        Self::transient("database", error.to_string())
    }
}
