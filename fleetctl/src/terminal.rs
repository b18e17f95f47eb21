//! What the commands need from the terminal besides their output: whether to draw progress
//! bars (on stderr), how to ask for a confirmation, and how often to poll a task. Tests
//! and scripts build an [`Environment`] by hand; `main` uses [`Environment::detect`].

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::FleetError;

/// How often a followed task is polled.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How destructive commands get their confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Ask on stderr and read the answer from stdin (both are terminals).
    Prompt,
    /// No one to ask: without `--yes`, destructive commands refuse.
    Unavailable,
    /// A fixed answer, for tests.
    Answer(bool),
}

/// The terminal around a command.
#[derive(Debug, Clone)]
pub struct Environment {
    /// Time between two polls of a task.
    pub poll_interval: Duration,
    /// Draw progress bars on stderr. indicatif also hides them when stderr is not a
    /// terminal, so this only turns them off further (tests).
    pub show_progress: bool,
    /// How to confirm a discard.
    pub confirmation: Confirmation,
}

impl Environment {
    /// The real terminal: bars when stderr is a terminal, prompts when stdin and stderr are.
    pub fn detect() -> Self {
        let stderr_is_terminal = std::io::stderr().is_terminal();
        let can_prompt = stderr_is_terminal && std::io::stdin().is_terminal();
        Self {
            poll_interval: DEFAULT_POLL_INTERVAL,
            show_progress: stderr_is_terminal,
            confirmation: if can_prompt {
                Confirmation::Prompt
            } else {
                Confirmation::Unavailable
            },
        }
    }

    /// No bars, no prompts (destructive commands need `--yes`), polling every `poll_interval`.
    pub fn non_interactive(poll_interval: Duration) -> Self {
        Self {
            poll_interval,
            show_progress: false,
            confirmation: Confirmation::Unavailable,
        }
    }

    /// Whether [`Environment::confirm`] can get an answer at all.
    pub fn can_confirm(&self) -> bool {
        self.confirmation != Confirmation::Unavailable
    }

    /// Asks `question` (which ends in `[y/N]`); only `y` or `yes` is a yes.
    pub fn confirm(&self, question: &str) -> Result<bool, FleetError> {
        match self.confirmation {
            Confirmation::Answer(answer) => Ok(answer),
            Confirmation::Unavailable => Ok(false),
            Confirmation::Prompt => {
                let mut stderr = std::io::stderr();
                write!(stderr, "{question} ")?;
                stderr.flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                Ok(is_yes(&answer))
            }
        }
    }

    /// A progress bar on stderr (hidden when bars are off): a spinner until its length is
    /// set with [`set_bar_length`].
    pub fn progress_bar(&self, prefix: String) -> ProgressBar {
        let target = if self.show_progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target).with_prefix(prefix);
        bar.set_style(spinner_style());
        if self.show_progress {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        bar
    }
}

/// Turns a spinner into a bar of `length` (once; later calls only update the length).
pub fn set_bar_length(bar: &ProgressBar, length: u64) {
    if bar.length().is_none() {
        bar.set_style(bar_style());
    }
    bar.set_length(length);
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix}: {pos} moved [{elapsed}] {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: [{bar:30}] {pos}/{len} moved [{elapsed}] {msg}")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_yes_confirms() {
        assert!(is_yes("y\n"));
        assert!(is_yes(" YES \n"));
        assert!(!is_yes("\n"));
        assert!(!is_yes("n"));
        assert!(!is_yes("yep"));
    }

    #[test]
    fn scripted_and_unavailable_confirmations() {
        let mut environment = Environment::non_interactive(Duration::from_millis(1));
        assert!(!environment.can_confirm());
        assert!(
            !environment
                .confirm("Discard 3 messages? [y/N]")
                .expect("no i/o")
        );
        environment.confirmation = Confirmation::Answer(true);
        assert!(environment.can_confirm());
        assert!(
            environment
                .confirm("Discard 3 messages? [y/N]")
                .expect("no i/o")
        );
    }

    #[test]
    fn bar_switches_from_spinner_to_length() {
        let environment = Environment::non_interactive(Duration::from_millis(1));
        let bar = environment.progress_bar("redrive".to_owned());
        assert!(bar.is_hidden());
        assert_eq!(bar.length(), None);
        set_bar_length(&bar, 12);
        bar.set_position(4);
        assert_eq!(bar.length(), Some(12));
        assert_eq!(bar.position(), 4);
    }
}
