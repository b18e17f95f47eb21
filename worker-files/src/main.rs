//! `worker-files`: consumes file jobs until SIGTERM.
//!
//! - `worker-files extract FILE [--engine E] [--json]` runs one file through the sandbox and prints
//!   what came out (see `command`).
//! - `worker-files extract-child ...` is the confined child the worker starts for each file; it is not
//!   for people.

use std::process::ExitCode;

use shared::config::Settings;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().collect();
    match arguments.get(1).map(String::as_str) {
        Some(worker_files::EXTRACT_CHILD_ARG) => {
            return worker_files::extract::child_main(arguments[2..].to_vec());
        }
        Some("extract") => return worker_files::command::main(arguments[1..].to_vec()),
        _ => {}
    }
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("worker-files: {error}");
            return ExitCode::from(2);
        }
    };
    // Dropped last (after the runtime): flushes the spans of the shutdown.
    let _telemetry = shared::telemetry::init(
        &settings.telemetry,
        "info,sqlx=warn,aws=warn",
        "worker-files",
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("worker-files: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime
        .block_on(async { worker_files::run(settings, shared::shutdown::on_signal()).await });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("worker-files: {error:#}");
            ExitCode::FAILURE
        }
    }
}
