//! Logging setup, in one place: structured fields, lowercase messages without a
//! trailing period, `RUST_LOG` to filter, `GLASSBOX_TELEMETRY__FORMAT=json` for machines.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;

use crate::config::{LogFormat, TelemetrySettings};

/// Installs the global subscriber; a second call (as in tests) is a no-op.
pub fn init(settings: &TelemetrySettings, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _already_set = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// For tests: logs only when `TEST_LOG` is set, so passing runs stay quiet.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init(&TelemetrySettings::default(), "info,sqlx=warn,aws=warn");
    }
}
