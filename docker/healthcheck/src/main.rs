//! `glassbox-healthcheck api|worker`: exit 0 when the container's server answers
//! `GET /health` with 200 (see the library docs).

use std::process::ExitCode;
use std::time::Duration;

use glassbox_healthcheck::{Role, probe, probe_address};

/// Below the 5 s timeout the compose file and the Dockerfile give the probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

fn main() -> ExitCode {
    let argument = std::env::args().nth(1).unwrap_or_default();
    let Some(role) = Role::from_argument(&argument) else {
        eprintln!("usage: glassbox-healthcheck api|worker");
        return ExitCode::from(2);
    };
    let (variable, default_listen) = role.listen_variable();
    let listen = std::env::var(variable).unwrap_or_else(|_| default_listen.to_owned());
    let outcome = probe_address(&listen).and_then(|address| probe(address, PROBE_TIMEOUT));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("glassbox-healthcheck: {error}");
            ExitCode::from(error.exit_status())
        }
    }
}
