//! Logging and tracing setup, in one place: structured fields, lowercase messages without
//! a trailing period, `RUST_LOG` to filter, `GLASSBOX_TELEMETRY__FORMAT=json` for machines.
//!
//! **OpenTelemetry** is off by default. It is turned on and configured by the standard
//! `OTEL_*` variables alone: an `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), or `OTEL_TRACES_EXPORTER=otlp`, exports every
//! span over OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or
//! `http/json`). `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` keep it off.
//! `OTEL_SERVICE_NAME` defaults to the binary's name; the batch processor
//! (`OTEL_BSP_*`), the sampler (`OTEL_TRACES_SAMPLER`), headers and timeouts follow the
//! SDK's own variables.
//!
//! **Trace context** crosses process boundaries as W3C `traceparent` / `tracestate`:
//! [`inject_current`] captures the current span's context (the outbox stores it with the
//! message), the relay sends it as SQS message attributes, and [`extract`] makes it the
//! parent of the worker's job span. An upload's trace therefore runs from the API request
//! through the outbox, the queue and each of the worker's stages.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, fmt};

use crate::config::{LogFormat, TelemetrySettings};

/// The W3C trace-context fields, as carried in an outbox row and an SQS message.
pub type TraceCarrier = HashMap<String, String>;

/// Flushes and stops the OTLP exporter when dropped (at the end of `main`), so the spans
/// of a shutdown are not lost. Holds nothing when export is off.
#[must_use = "dropping the guard at once stops the trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // The batch processor's own thread does the export; this waits for it, bounded
            // by the exporter's timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`).
            if let Err(error) = provider.shutdown() {
                eprintln!("opentelemetry: flushing the last spans failed: {error}");
            }
        }
    }
}

/// Installs the global subscriber (logs, and spans over OTLP when the `OTEL_*` variables
/// ask for it) for the binary `service`; a second call (as in tests) is a no-op.
pub fn init(
    settings: &TelemetrySettings,
    default_filter: &str,
    service: &'static str,
) -> TelemetryGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = match settings.format {
        LogFormat::Json => fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(std::io::stderr).compact().boxed(),
    };
    let (provider, export_error) = match OtlpConfig::from_env(std::env::vars()) {
        Ok(Some(config)) => match config.provider(service) {
            Ok(provider) => (Some(provider), None),
            Err(error) => (None, Some(error)),
        },
        Ok(None) => (None, None),
        Err(error) => (None, Some(error)),
    };
    let traces = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(service)));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if let Some(error) = export_error {
        tracing::warn!(%error, "opentelemetry export is off");
    }
    if !installed {
        // Another subscriber won (a test process): nothing here would see spans.
        return TelemetryGuard { provider: None };
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing::info!(service, "opentelemetry: exporting spans over otlp");
    }
    TelemetryGuard { provider }
}

/// For tests: logs only when `TEST_LOG` is set, so passing runs stay quiet.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        let guard = init(
            &TelemetrySettings::default(),
            "info,sqlx=warn,aws=warn",
            "test",
        );
        // A test process has no end to flush at.
        std::mem::forget(guard);
    }
}

/// The current span's trace context as W3C fields; empty when no span is exported (OTLP
/// off, or outside any span), so callers store and send nothing.
pub fn inject_current() -> TraceCarrier {
    let context = tracing::Span::current().context();
    let mut carrier = TraceCarrier::new();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut CarrierMut(&mut carrier));
    }
    carrier
}

/// Makes the trace context in `carrier` (from an SQS message, an HTTP request) the parent
/// of `span`, which must not have been entered yet. Does nothing for an empty or invalid
/// carrier, or when no span is exported.
pub fn set_parent(span: &tracing::Span, carrier: &TraceCarrier) {
    if carrier.is_empty() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&CarrierRef(carrier));
    if context.span().span_context().is_valid() {
        // An error only means the span is not exported (OTLP off): nothing to link.
        let _ = span.set_parent(context);
    }
}

struct CarrierMut<'a>(&'a mut TraceCarrier);

impl Injector for CarrierMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

struct CarrierRef<'a>(&'a TraceCarrier);

impl Extractor for CarrierRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// What the `OTEL_*` variables ask of the trace exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OtlpConfig {
    protocol: Protocol,
    /// `OTEL_SERVICE_NAME`, which wins over the binary's name.
    service_name: Option<String>,
}

impl OtlpConfig {
    /// `None` when export is off (the default); an error names a variable that asks for
    /// something this build cannot do.
    fn from_env(variables: impl Iterator<Item = (String, String)>) -> Result<Option<Self>, String> {
        let variables: HashMap<String, String> = variables.collect();
        let get = |name: &str| {
            variables
                .get(name)
                .map(|value| value.trim())
                .filter(|value| !value.is_empty())
        };
        if get("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let exporter = get("OTEL_TRACES_EXPORTER").map(str::to_ascii_lowercase);
        let endpoint_set = get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
        match exporter.as_deref() {
            Some("none") => return Ok(None),
            Some("otlp") => {}
            Some(other) => {
                return Err(format!(
                    "OTEL_TRACES_EXPORTER={other} is not supported (otlp or none)"
                ));
            }
            None if !endpoint_set => return Ok(None),
            None => {}
        }
        let protocol = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("http/json") => Protocol::HttpJson,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported (http/protobuf or http/json)"
                ));
            }
        };
        Ok(Some(Self {
            protocol,
            service_name: get("OTEL_SERVICE_NAME").map(str::to_string),
        }))
    }

    fn provider(&self, service: &'static str) -> Result<SdkTracerProvider, String> {
        // The endpoint, headers and timeout come from the OTEL_* variables the exporter
        // reads itself (default endpoint: http://localhost:4318/v1/traces).
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(self.protocol)
            .build()
            .map_err(|error| format!("building the otlp exporter: {error}"))?;
        let mut resource = Resource::builder();
        if self.service_name.is_none() {
            resource = resource.with_service_name(service);
        }
        Ok(SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Option<OtlpConfig>, String> {
        OtlpConfig::from_env(
            pairs
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string())),
        )
    }

    #[test]
    fn export_is_off_unless_the_otel_variables_ask_for_it() {
        assert_eq!(config(&[]), Ok(None));
        assert_eq!(config(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        assert_eq!(config(&[("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
        assert_eq!(
            config(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ]),
            Ok(None)
        );
        assert_eq!(
            config(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ]),
            Ok(None)
        );
    }

    #[test]
    fn an_endpoint_or_the_otlp_exporter_turns_export_on() {
        let on = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(on.protocol, Protocol::HttpBinary);
        assert_eq!(on.service_name, None);
        let on = config(&[
            ("OTEL_TRACES_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_SERVICE_NAME", "files-eu"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(on.protocol, Protocol::HttpJson);
        assert_eq!(on.service_name.as_deref(), Some("files-eu"));
    }

    #[test]
    fn what_this_build_cannot_export_is_an_error_naming_the_variable() {
        let error = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap_err();
        assert!(
            error.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
            "{error}"
        );
        let error = config(&[("OTEL_TRACES_EXPORTER", "zipkin")]).unwrap_err();
        assert!(error.contains("OTEL_TRACES_EXPORTER=zipkin"), "{error}");
    }

    #[test]
    fn a_carrier_without_a_valid_traceparent_changes_nothing() {
        let span = tracing::info_span!("job");
        set_parent(&span, &TraceCarrier::new());
        let mut carrier = TraceCarrier::new();
        carrier.insert("traceparent".into(), "not-a-traceparent".into());
        set_parent(&span, &carrier);
        assert!(inject_current().is_empty());
    }
}
