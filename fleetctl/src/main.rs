//! fleetctl: parse, run, map the result to an exit code (2 for usage errors, as clap's).

use std::process::ExitCode;

use clap::Parser;
use fleetctl::{Cli, Environment};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout();
    match fleetctl::run(cli, &Environment::detect(), &mut stdout).await {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(error) if error.is_broken_pipe() => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error.report());
            ExitCode::from(error.exit_code())
        }
    }
}
