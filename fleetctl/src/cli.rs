//! The command line (clap derive). Parsing only: what each command does is in
//! [`crate::commands`].

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use uuid::Uuid;

/// The ops CLI of GlassBox Fleet: queues, dead-letter queues, stuck jobs, files,
/// executions, schedules and the audit log, over api-lite's HTTP API.
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, before or after its name.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Base URL of api-lite.
    #[arg(
        long,
        env = "FLEETCTL_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub api_url: String,
    /// Bearer token (required). Ops routes need one minted with
    /// `api-lite token --org <id> --ops`.
    #[arg(long, env = "FLEETCTL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON answer (pretty) instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 30, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Depth of every queue and of its dead-letter queue.
    Queues,
    /// Dead-letter queues: peek, show, redrive, discard.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Jobs stuck in flight or queued too long; `stuck requeue` re-enqueues them.
    Stuck(StuckArgs),
    /// Recent failures grouped by error class.
    Failures {
        /// How far back to look, in seconds (the API's default is a day).
        #[arg(long)]
        since_secs: Option<u64>,
    },
    /// Files of the token's org.
    #[command(subcommand)]
    Files(FilesCommand),
    /// Agent executions of the token's org (or of every org with `list --all-orgs`).
    #[command(subcommand)]
    Executions(ExecutionsCommand),
    /// Scheduled actions (cron, UTC).
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Background ops tasks (redrives).
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// The audit log of ops actions, newest first.
    Audit {
        /// How many entries.
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// Peek at a dead-letter queue (messages stay there).
    List {
        #[command(flatten)]
        queue: QueueArg,
        /// How many messages to peek at.
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Every field of one dead-lettered message, its last error and body.
    Show {
        #[command(flatten)]
        queue: QueueArg,
        /// Message id, or a unique prefix of one (as `dlq list` shows).
        message_id: String,
    },
    /// Move messages back to their source queue and follow the move.
    Redrive {
        #[command(flatten)]
        queue: QueueArg,
        #[command(flatten)]
        selector: Selector,
        /// Messages per second.
        #[arg(long = "rate", value_name = "PER_SEC",
              value_parser = clap::value_parser!(u32).range(1..))]
        rate_per_sec: Option<u32>,
        /// Start the redrive and print its task without following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete messages for good (asks first).
    Discard {
        #[command(flatten)]
        queue: QueueArg,
        #[command(flatten)]
        selector: Selector,
        /// Do not ask; needed when stdin is not a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// The queue a DLQ command acts on.
#[derive(Debug, Clone, Args)]
pub struct QueueArg {
    /// Queue by logical name: `file-jobs` or `agent-jobs` (a trailing `-dlq` is ignored).
    #[arg(value_name = "QUEUE")]
    pub name: String,
}

impl QueueArg {
    /// The logical name: `file-jobs-dlq` reads as `file-jobs`.
    pub fn logical_name(&self) -> &str {
        self.name.strip_suffix("-dlq").unwrap_or(&self.name)
    }
}

/// Which dead-lettered messages: all of them, some by id, or those matching a filter
/// (`--kind`, `--error-code`, `--org`, any combination). Exactly one kind of selector.
#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("selector")
        .required(true)
        .multiple(true)
        .args(["all", "message_ids", "kind", "error_code", "org"])
))]
pub struct Selector {
    /// Every message in the DLQ.
    #[arg(long, conflicts_with_all = ["message_ids", "kind", "error_code", "org"])]
    pub all: bool,
    /// These messages (ids or unique prefixes); repeat or list several.
    #[arg(long = "id", value_name = "MESSAGE_ID", num_args = 1..,
          conflicts_with_all = ["kind", "error_code", "org"])]
    pub message_ids: Vec<String>,
    /// Filter: job kind, e.g. `file.process`.
    #[arg(long)]
    pub kind: Option<String>,
    /// Filter: error code, e.g. `s3_unavailable`.
    #[arg(long)]
    pub error_code: Option<String>,
    /// Filter: org id.
    #[arg(long)]
    pub org: Option<Uuid>,
}

/// `fleetctl stuck`: lists; `fleetctl stuck requeue`: re-enqueues.
#[derive(Debug, Clone, Args)]
pub struct StuckArgs {
    #[command(subcommand)]
    pub action: Option<StuckCommand>,
    /// Count a queued job as stuck after this many seconds (the API's default is 300).
    #[arg(long)]
    pub queued_for_secs: Option<u64>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum StuckCommand {
    /// Re-enqueue stuck jobs: every one, or the ones named.
    #[command(group(ArgGroup::new("jobs_selector").required(true).args(["all", "jobs"])))]
    Requeue {
        /// Every stuck job.
        #[arg(long)]
        all: bool,
        /// A job as `kind:id`, e.g. `file.process:0193…`; repeat for several.
        #[arg(long = "job", value_name = "KIND:ID", value_parser = parse_job_ref)]
        jobs: Vec<JobRef>,
        /// With `--all`: count a queued job as stuck after this many seconds.
        #[arg(long, requires = "all")]
        queued_for_secs: Option<u64>,
    },
}

/// A job named on the command line as `kind:id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub kind: String,
    pub id: Uuid,
}

fn parse_job_ref(text: &str) -> Result<JobRef, String> {
    let (kind, id) = text
        .split_once(':')
        .ok_or_else(|| format!("expected KIND:ID (e.g. file.process:<uuid>), got {text:?}"))?;
    if kind.is_empty() {
        return Err(format!("missing job kind in {text:?}"));
    }
    let id = Uuid::parse_str(id).map_err(|error| format!("invalid job id {id:?}: {error}"))?;
    Ok(JobRef {
        kind: kind.to_owned(),
        id,
    })
}

#[derive(Debug, Clone, Subcommand)]
pub enum FilesCommand {
    /// Files of the token's org, newest first.
    List {
        /// Only files in this status (e.g. `failed`, `dead_lettered`, `ready`).
        #[arg(long)]
        status: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Run files through the pipeline again.
    Reprocess {
        /// File ids.
        #[arg(required = true)]
        ids: Vec<Uuid>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ExecutionsCommand {
    /// Executions of the token's org, or of every org with `--all-orgs` (ops role).
    List {
        /// Only these statuses, comma-separated (e.g. `running,awaiting_input`).
        #[arg(long)]
        status: Option<String>,
        /// Page size.
        #[arg(long)]
        limit: Option<u32>,
        /// The `next_cursor` of the previous page.
        #[arg(long, conflicts_with = "all_orgs")]
        cursor: Option<String>,
        /// Every org's executions (GET /v1/ops/executions).
        #[arg(long)]
        all_orgs: bool,
    },
    /// Every field of one execution.
    Show {
        /// Execution id.
        id: Uuid,
    },
    /// Every event of an execution's trace (all pages).
    Trace {
        /// Execution id.
        id: Uuid,
    },
    /// Ask an execution to stop.
    Cancel {
        /// Execution id.
        id: Uuid,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum SchedulesCommand {
    /// Every schedule, with its next and last fire.
    List,
    /// Create a schedule.
    Add {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Cron expression in UTC: 5 fields, or 6 with seconds first.
        #[arg(long)]
        cron: String,
        /// What each fire does.
        #[arg(long, value_enum)]
        action: ScheduleAction,
        /// Only this org's files.
        #[arg(long)]
        org: Option<Uuid>,
        /// At most this many files per fire (the API's default is 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// `reextract` only: files whose text came from this engine (pdfium, pdf-extract,
        /// docx, html, text), current extractor version included.
        #[arg(long)]
        engine: Option<String>,
        /// `reextract` only: files extracted by exactly this extractor version.
        #[arg(long)]
        extractor_version: Option<u32>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a schedule.
    Remove {
        /// Schedule id.
        id: String,
    },
    /// Fire a schedule now, once.
    RunNow {
        /// Schedule id.
        id: String,
    },
}

/// What a schedule does on each fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleAction {
    /// Re-enqueue files that ended failed or dead-lettered with a transient error.
    #[value(name = "retry_transient")]
    RetryTransient,
    /// Reprocess ready files embedded with a model other than the current default.
    #[value(name = "reembed")]
    Reembed,
    /// Reprocess ready files extracted by an older extractor version.
    #[value(name = "reextract")]
    Reextract,
}

impl ScheduleAction {
    /// The name the API uses.
    pub fn api_name(self) -> &'static str {
        match self {
            Self::RetryTransient => "retry_transient",
            Self::Reembed => "reembed",
            Self::Reextract => "reextract",
        }
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum TasksCommand {
    /// One task; `--wait` follows it to the end with a progress bar.
    Show {
        /// Task id.
        id: String,
        /// Follow until it succeeds or fails.
        #[arg(long)]
        wait: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(arguments: &[&str]) -> Result<Cli, clap::Error> {
        let mut full = vec!["fleetctl", "--token", "t"];
        full.extend_from_slice(arguments);
        Cli::try_parse_from(full)
    }

    fn parse_error(arguments: &[&str]) -> ErrorKind {
        match parse(arguments) {
            Ok(cli) => panic!("{arguments:?} parsed as {cli:?}"),
            Err(error) => error.kind(),
        }
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_work_after_the_command() {
        let cli = Cli::try_parse_from([
            "fleetctl",
            "queues",
            "--json",
            "--api-url",
            "http://api:9000",
            "--token",
            "abc",
            "--timeout-secs",
            "5",
        ])
        .expect("parses");
        assert!(cli.global.json);
        assert_eq!(cli.global.api_url, "http://api:9000");
        assert_eq!(cli.global.token.as_deref(), Some("abc"));
        assert_eq!(cli.global.timeout_secs, 5);
        assert!(matches!(cli.command, Command::Queues));
        assert_eq!(
            parse_error(&["queues", "--timeout-secs", "0"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn redrive_needs_exactly_one_kind_of_selector() {
        assert_eq!(
            parse_error(&["dlq", "redrive", "file-jobs"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse_error(&["dlq", "redrive", "file-jobs", "--all", "--id", "m-1"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse_error(&[
                "dlq",
                "redrive",
                "file-jobs",
                "--all",
                "--kind",
                "file.process"
            ]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse_error(&[
                "dlq",
                "redrive",
                "file-jobs",
                "--id",
                "m-1",
                "--error-code",
                "x"
            ]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse_error(&["dlq", "discard", "file-jobs", "--org", "not-a-uuid"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn redrive_selectors_parse() {
        let cli = parse(&[
            "dlq",
            "redrive",
            "file-jobs-dlq",
            "--id",
            "m-1",
            "m-2",
            "--id",
            "m-3",
            "--rate",
            "50",
            "--no-wait",
        ])
        .expect("parses");
        let Command::Dlq(DlqCommand::Redrive {
            queue,
            selector,
            rate_per_sec,
            no_wait,
        }) = cli.command
        else {
            panic!("not a redrive");
        };
        assert_eq!(queue.logical_name(), "file-jobs");
        assert_eq!(selector.message_ids, ["m-1", "m-2", "m-3"]);
        assert!(!selector.all);
        assert_eq!(rate_per_sec, Some(50));
        assert!(no_wait);

        let org = "0193c1a2-7b4e-7c3d-9f10-2a6b8c9d0e1f";
        let cli = parse(&[
            "dlq",
            "discard",
            "agent-jobs",
            "--kind",
            "agent.step",
            "--error-code",
            "timeout",
            "--org",
            org,
            "--yes",
        ])
        .expect("a filter may combine its fields");
        let Command::Dlq(DlqCommand::Discard { selector, yes, .. }) = cli.command else {
            panic!("not a discard");
        };
        assert!(yes);
        assert_eq!(selector.kind.as_deref(), Some("agent.step"));
        assert_eq!(selector.error_code.as_deref(), Some("timeout"));
        assert_eq!(
            selector.org.map(|org| org.to_string()).as_deref(),
            Some(org)
        );
    }

    #[test]
    fn stuck_requeue_and_schedules_parse() {
        let id = "0193c1a2-7b4e-7c3d-9f10-2a6b8c9d0e1f";
        let cli =
            parse(&["stuck", "requeue", "--job", &format!("file.process:{id}")]).expect("parses");
        let Command::Stuck(StuckArgs {
            action: Some(StuckCommand::Requeue { jobs, all, .. }),
            ..
        }) = cli.command
        else {
            panic!("not a requeue");
        };
        assert!(!all);
        assert_eq!(jobs[0].kind, "file.process");
        assert_eq!(jobs[0].id.to_string(), id);
        assert_eq!(
            parse_error(&["stuck", "requeue"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse_error(&["stuck", "requeue", "--job", "file.process"]),
            ErrorKind::ValueValidation
        );
        assert!(matches!(
            parse(&["stuck", "--queued-for-secs", "60"])
                .expect("parses")
                .command,
            Command::Stuck(StuckArgs {
                action: None,
                queued_for_secs: Some(60)
            })
        ));

        let cli = parse(&[
            "schedules",
            "add",
            "--name",
            "nightly",
            "--cron",
            "0 3 * * *",
            "--action",
            "retry_transient",
            "--disabled",
        ])
        .expect("parses");
        let Command::Schedules(SchedulesCommand::Add {
            action, disabled, ..
        }) = cli.command
        else {
            panic!("not an add");
        };
        assert_eq!(action.api_name(), "retry_transient");
        assert!(disabled);
        assert_eq!(
            parse_error(&[
                "schedules",
                "add",
                "--name",
                "n",
                "--cron",
                "* * * * *",
                "--action",
                "retry-transient"
            ]),
            ErrorKind::InvalidValue
        );
    }

    #[test]
    fn missing_command_is_a_usage_error() {
        for arguments in [&[][..], &["dlq"], &["dlq", "redrive", "file-jobs"]] {
            let error = parse(arguments).expect_err("incomplete command line");
            assert_eq!(error.exit_code(), 2, "{arguments:?}");
        }
        assert_eq!(parse_error(&[]), ErrorKind::MissingSubcommand);
        assert_eq!(
            parse_error(&["dlq"]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(
            parse_error(&["files", "reprocess"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse_error(&["executions", "show", "42"]),
            ErrorKind::ValueValidation
        );
    }
}
