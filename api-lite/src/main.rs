//! `api-lite [serve]`, `api-lite migrate`, `api-lite token --org <id>`.

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
    /// Print a bearer token for an org (development and ops).
    Token {
        #[arg(long)]
        org: Uuid,
        #[arg(long, default_value = "dev")]
        subject: String,
        /// Lifetime in seconds; GLASSBOX_AUTH__TOKEN_TTL_SECS when unset.
        #[arg(long)]
        ttl_secs: Option<u64>,
        /// Add the ops role: fleet-wide queues, DLQs, stuck jobs, schedules, audit.
        #[arg(long)]
        ops: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("api-lite: {error}");
            return ExitCode::from(2);
        }
    };
    shared::telemetry::init(
        &settings.telemetry,
        "info,sqlx=warn,aws=warn,tower_http=info",
    );
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Token {
            org,
            subject,
            ttl_secs,
            ops,
        } => token(&settings, org, &subject, ttl_secs, ops),
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
) -> anyhow::Result<()> {
    let secret = settings.auth.secret()?;
    println!(
        "{}",
        api_lite::auth::mint_token(
            secret,
            org,
            subject,
            ttl_secs.unwrap_or(settings.auth.token_ttl_secs),
            if ops {
                &[api_lite::auth::OPS_ROLE]
            } else {
                &[]
            },
        )
    );
    Ok(())
}
