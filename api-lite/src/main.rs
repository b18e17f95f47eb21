//! `api-lite [serve]`, `api-lite migrate`, `api-lite token --org <id> [--ops] [--approver]`,
//! `api-lite openapi` (prints the OpenAPI document; `docs/openapi.json` is its output).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::config::Settings;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "api-lite", about = "The GlassBox Fleet API", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, start the outbox relay and serve HTTP (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Print the OpenAPI 3.1 document (needs no configuration).
    Openapi,
    /// Print a bearer token for an org (development and ops).
    Token {
        #[arg(long)]
        org: Uuid,
        #[arg(long, default_value = "dev")]
        subject: String,
        /// Lifetime in seconds; GLASSBOX_AUTH__TOKEN_TTL_SECS when unset, or
        /// GLASSBOX_AUTH__OPS_TOKEN_TTL_SECS (short) for an ops token.
        #[arg(long)]
        ttl_secs: Option<u64>,
        /// Add the ops role: fleet-wide queues, DLQs, stuck jobs, schedules, audit.
        /// Signed with GLASSBOX_AUTH__OPS_JWT_SECRET when that is set.
        #[arg(long)]
        ops: bool,
        /// Add the approver role: may approve or reject tool calls held for approval.
        #[arg(long)]
        approver: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::Openapi)) {
        print!("{}", api_lite::openapi::document_json());
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("api-lite: {error}");
            return ExitCode::from(2);
        }
    };
    // Dropped at the end of main: flushes the spans of the shutdown.
    let _telemetry = shared::telemetry::init(
        &settings.telemetry,
        "info,sqlx=warn,aws=warn,tower_http=info",
        "api-lite",
    );
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Openapi => unreachable!("answered before the settings are read"),
        Command::Token {
            org,
            subject,
            ttl_secs,
            ops,
            approver,
        } => token(&settings, org, &subject, ttl_secs, ops, approver),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("api-lite: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&settings.api.listen).await?;
    api_lite::run(listener, settings, shared::shutdown::on_signal()).await
}

async fn migrate(settings: Settings) -> anyhow::Result<()> {
    let pool = shared::db::connect(&settings.database).await?;
    shared::db::migrate(&pool).await?;
    tracing::info!("migrations applied");
    // The backfills and concurrent index builds, to completion (api-lite's start runs them
    // in the background instead).
    let report = shared::online_migrations::run(&pool).await?;
    tracing::info!(
        chunks_backfilled = report.chunks_backfilled,
        indexes_built = ?report.indexes_built,
        skipped = report.skipped,
        "online migrations applied"
    );
    Ok(())
}

fn token(
    settings: &Settings,
    org: Uuid,
    subject: &str,
    ttl_secs: Option<u64>,
    ops: bool,
    approver: bool,
) -> anyhow::Result<()> {
    let auth = &settings.auth;
    let default_ttl = if ops {
        auth.ops_token_ttl_secs
    } else {
        auth.token_ttl_secs
    };
    let ttl_secs = ttl_secs.unwrap_or(default_ttl);
    if ops && ttl_secs > auth.ops_token_max_ttl_secs {
        anyhow::bail!(
            "an ops token may live at most {} seconds (GLASSBOX_AUTH__OPS_TOKEN_MAX_TTL_SECS)",
            auth.ops_token_max_ttl_secs
        );
    }
    let mut roles = Vec::new();
    if ops {
        roles.push(api_lite::auth::OPS_ROLE);
    }
    if approver {
        roles.push(api_lite::auth::APPROVER_ROLE);
    }
    println!(
        "{}",
        api_lite::auth::mint_token(auth, org, subject, ttl_secs, &roles)?
    );
    Ok(())
}
