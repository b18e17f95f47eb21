//! fleetctl: the ops CLI of GlassBox Fleet, over api-lite's HTTP API (`docs/ops-api.md`).
//!
//! # Layout
//! - [`cli`]: the clap command line, parsing only.
//! - [`client`]: [`Client`], the HTTP client: bearer token, timeout, JSON in and out,
//!   error answers read into [`ApiError`].
//! - [`commands`]: one function per command, writing to any `Write` so tests can read it.
//! - [`render`]: tables, key/value views and duration, time and size formatting.
//! - [`fields`]: accessors over the API's loose JSON.
//! - [`terminal`]: progress bars, confirmation prompts and polling, as an [`Environment`].
//! - [`error`]: [`FleetError`], what stderr shows and which exit code it maps to.
//!
//! [`run`] ties them together: parsed command line in, [`Outcome`] or error out. `main`
//! only parses, calls it and turns the result into an exit code.

/// The command line.
pub mod cli;
/// The HTTP client.
pub mod client;
/// One function per command.
pub mod commands;
/// Errors and exit codes.
pub mod error;
/// Accessors over loose JSON.
pub mod fields;
/// Text output.
pub mod render;
/// Progress bars, prompts, polling.
pub mod terminal;

use std::time::Duration;

pub use cli::Cli;
pub use client::Client;
pub use commands::{Output, Session};
pub use error::{ApiError, FleetError};
pub use terminal::{Confirmation, Environment};

/// How a command that ran to the end went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: the API accepted the command but what it did failed (a redrive task failed
    /// or failed to move messages, a file could not be reprocessed, a discard was declined).
    Failure,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
        }
    }
}

/// Runs a parsed command line against the API it names, writing results to `out` (progress
/// bars and prompts go to stderr, as `environment` allows).
pub async fn run(
    cli: Cli,
    environment: &Environment,
    out: &mut Output<'_>,
) -> Result<Outcome, FleetError> {
    let token = cli
        .global
        .token
        .as_deref()
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            FleetError::Usage(
                "no token: pass --token or set FLEETCTL_TOKEN (mint one with \
                 `api-lite token --org <id> --ops`)"
                    .to_owned(),
            )
        })?;
    let client = Client::with_timeout(
        &cli.global.api_url,
        token,
        Duration::from_secs(cli.global.timeout_secs),
    )?;
    let session = Session {
        client: &client,
        environment,
        json: cli.global.json,
    };
    commands::dispatch(&session, cli.command, out).await
}
