//! Building the exporter, the tracer provider and the subscriber.

use longshore_core::url::redact_url;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::client::ExportClient;
use crate::config::{ExportMode, OtelConfig};
use crate::error::OtelError;
use crate::guard::OtelGuard;
use crate::propagation::OtelPropagation;

/// The instrumentation scope longshore's spans are exported under.
pub const TRACER_NAME: &str = "longshore";

/// Sets up OpenTelemetry for a service: an OTLP/HTTP (protobuf) span exporter, a tracer
/// provider, a global `tracing` subscriber with the OpenTelemetry layer and a stderr log
/// layer, and the [`OtelPropagation`] that puts real span ids into messages.
///
/// Call once at startup, before connecting, and keep the guard until the service stops:
/// dropping it flushes and shuts down the exporter.
pub fn init(config: OtelConfig) -> Result<OtelGuard, OtelError> {
    let provider = tracer_provider(&config)?;
    let trace_filter = parse_filter(config.trace_filter.as_deref().unwrap_or("info"))?;
    let log_filter = match config.log_filter.as_deref() {
        Some(filter) => parse_filter(filter)?,
        None => parse_filter(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))?,
    };
    let otel = layer(provider.tracer(TRACER_NAME)).with_filter(trace_filter);
    let log = config
        .log
        .then(|| tracing_subscriber::fmt::layer().with_filter(log_filter));
    tracing_subscriber::registry()
        .with(otel)
        .with(log)
        .try_init()
        .map_err(|e| OtelError::SubscriberAlreadySet(e.to_string()))?;
    // Another propagation installed first (by a test harness, say) keeps its place.
    longshore_core::observe::set_propagation(OtelPropagation);
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(OtelGuard::new(provider))
}

/// The OTLP/HTTP exporter and tracer provider [`init`] uses, for services that build their own
/// subscriber: `layer(provider.tracer("my-service"))`, then install [`crate::propagation`].
/// Shut the provider down before exiting (or wrap it in [`OtelGuard::new`]) so the last spans
/// are sent.
pub fn tracer_provider(config: &OtelConfig) -> Result<SdkTracerProvider, OtelError> {
    let url = config.traces_url(|name| std::env::var(name).ok());
    if !url
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
    {
        return Err(OtelError::Exporter(format!(
            "{}: only plain http:// endpoints are supported (no TLS client is compiled in); \
             export to a local collector or sidecar",
            redact_url(&url)
        )));
    }
    let client = ExportClient::start(config.timeout)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(config.timeout)
        .with_http_client(client)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string().replace(&url, &redact_url(&url))))?;
    let mut resource = Resource::builder();
    if !config.service_name.is_empty() {
        resource = resource.with_service_name(config.service_name.clone());
    }
    let provider = SdkTracerProvider::builder().with_resource(resource.build());
    let provider = match config.export {
        ExportMode::Batch => provider.with_batch_exporter(exporter),
        ExportMode::Simple => provider.with_simple_exporter(exporter),
    };
    Ok(provider.build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `tracer`, for services
/// that build their own subscriber.
pub fn layer<S>(tracer: SdkTracer) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(tracer)
}

/// `filter` with the client libraries' frame-dumping targets capped (credentials never reach
/// the log, see `longshore_core::observe::log_directives`).
fn parse_filter(filter: &str) -> Result<EnvFilter, OtelError> {
    EnvFilter::try_new(longshore_core::observe::log_directives(filter)).map_err(|e| {
        OtelError::Filter {
            filter: filter.to_string(),
            message: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_show_endpoint_credentials() {
        let config = OtelConfig {
            endpoint: Some("http://user:s3cret@[bad".into()),
            ..OtelConfig::new("svc")
        };
        let err = tracer_provider(&config).expect_err("a malformed endpoint is refused");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn https_is_refused_up_front() {
        let config = OtelConfig {
            endpoint: Some("https://key:s3cret@collector.example:4318".into()),
            ..OtelConfig::new("svc")
        };
        let err = tracer_provider(&config).expect_err("no TLS client");
        let shown = err.to_string();
        assert!(shown.contains("only plain http://"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn a_bad_filter_is_an_error() {
        assert!(matches!(
            parse_filter("info,[[["),
            Err(OtelError::Filter { .. })
        ));
    }
}
