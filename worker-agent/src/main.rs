//! `worker-agent`: consumes agent jobs until SIGTERM.

use std::process::ExitCode;

use shared::config::Settings;

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("worker-agent: {error}");
            return ExitCode::from(2);
        }
    };
    // Dropped last (after the runtime): flushes the spans of the shutdown.
    let _telemetry = shared::telemetry::init(
        &settings.telemetry,
        "info,sqlx=warn,aws=warn",
        "worker-agent",
    );
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("worker-agent: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime
        .block_on(async { worker_agent::run(settings, shared::shutdown::on_signal()).await });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("worker-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}
