//! What [`crate::init`] sets up.

use std::fmt;
use std::time::Duration;

use longshore_core::url::redact_url;

/// How finished spans reach the collector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportMode {
    /// Queued and sent in batches from a background thread (`OTEL_BSP_*` tune it). For
    /// services.
    #[default]
    Batch,
    /// Sent one by one as each span ends, blocking the thread that ends it. For tests and
    /// debugging.
    Simple,
}

/// Configuration for [`crate::init`]. Start from [`OtelConfig::new`] or `Default` and set
/// what differs:
///
/// ```
/// let config = longshore_otel::OtelConfig {
///     endpoint: Some("http://otel-collector:4318".into()),
///     ..longshore_otel::OtelConfig::new("billing")
/// };
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct OtelConfig {
    /// Base URL of an OTLP/HTTP collector (`http://localhost:4318`); `/v1/traces` is
    /// appended. `None` leaves it to the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// (used as is), else `OTEL_EXPORTER_OTLP_ENDPOINT`, else `http://localhost:4318`. Plain
    /// `http://` only: no TLS client is compiled in (send to a local collector or sidecar).
    pub endpoint: Option<String>,
    /// The `service.name` resource attribute. Empty leaves it to `OTEL_SERVICE_NAME`, else the
    /// SDK's `unknown_service`.
    pub service_name: String,
    /// Which spans are exported, in `EnvFilter` syntax. `None`: `info`, which includes
    /// longshore's publish, receive and handle spans.
    pub trace_filter: Option<String>,
    /// Which events and spans are logged to stderr, in `EnvFilter` syntax. `None`: `RUST_LOG`,
    /// else `info`.
    pub log_filter: Option<String>,
    /// Whether to log to stderr at all (the `fmt` layer).
    pub log: bool,
    /// Batch or one span at a time.
    pub export: ExportMode,
    /// The longest one export request may take.
    pub timeout: Duration,
}

impl OtelConfig {
    /// Defaults, with `service.name` set.
    pub fn new(service_name: impl Into<String>) -> Self {
        OtelConfig {
            service_name: service_name.into(),
            ..Self::default()
        }
    }

    /// The URL spans are POSTed to: the configured endpoint, else the standard variables read
    /// through `env`, else the OTLP/HTTP default.
    pub(crate) fn traces_url(&self, env: impl Fn(&str) -> Option<String>) -> String {
        let set = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        if let Some(base) = set(self.endpoint.clone()) {
            return with_traces_path(&base);
        }
        if let Some(url) = set(env(ENV_TRACES_ENDPOINT)) {
            return url;
        }
        with_traces_path(&set(env(ENV_ENDPOINT)).unwrap_or_else(|| DEFAULT_ENDPOINT.into()))
    }
}

/// The signal-specific endpoint variable, used as is.
pub(crate) const ENV_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The base endpoint variable; `/v1/traces` is appended.
pub(crate) const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The OTLP/HTTP default.
const DEFAULT_ENDPOINT: &str = "http://localhost:4318";

fn with_traces_path(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

impl Default for OtelConfig {
    fn default() -> Self {
        OtelConfig {
            endpoint: None,
            service_name: String::new(),
            trace_filter: None,
            log_filter: None,
            log: true,
            export: ExportMode::Batch,
            timeout: Duration::from_secs(10),
        }
    }
}

// The endpoint may carry credentials in its user info.
impl fmt::Debug for OtelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelConfig")
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("service_name", &self.service_name)
            .field("trace_filter", &self.trace_filter)
            .field("log_filter", &self.log_filter)
            .field("log", &self.log)
            .field("export", &self.export)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn appends_the_traces_path_once() {
        for base in ["http://c:4318", "http://c:4318/", " http://c:4318 "] {
            let config = OtelConfig {
                endpoint: Some(base.into()),
                ..OtelConfig::default()
            };
            assert_eq!(config.traces_url(no_env), "http://c:4318/v1/traces");
        }
        assert_eq!(
            OtelConfig::default().traces_url(no_env),
            "http://localhost:4318/v1/traces"
        );
    }

    #[test]
    fn the_config_wins_then_the_signal_variable_then_the_base_variable() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[
            (ENV_TRACES_ENDPOINT, "http://t:1/custom"),
            (ENV_ENDPOINT, "http://b:2"),
        ]);
        let explicit = OtelConfig {
            endpoint: Some("http://c:3".into()),
            ..OtelConfig::default()
        };
        assert_eq!(explicit.traces_url(both), "http://c:3/v1/traces");
        assert_eq!(OtelConfig::default().traces_url(both), "http://t:1/custom");
        assert_eq!(
            OtelConfig::default().traces_url(env(&[(ENV_ENDPOINT, "http://b:2/")])),
            "http://b:2/v1/traces"
        );
    }

    #[test]
    fn debug_hides_credentials() {
        let config = OtelConfig {
            endpoint: Some("http://user:s3cret@collector:4318".into()),
            ..OtelConfig::new("svc")
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("collector"), "{shown}");
    }
}
