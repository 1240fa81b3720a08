//! Why OpenTelemetry could not be set up.

/// Why [`crate::init`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// The OTLP exporter could not be built (a bad endpoint, say). Endpoints in the message are
    /// redacted.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// The export thread could not be started.
    #[error("OTLP export thread: {0}")]
    Runtime(#[source] std::io::Error),
    /// The log filter did not parse.
    #[error("log filter {filter:?}: {message}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        message: String,
    },
    /// A global `tracing` subscriber is already installed. Build the subscriber yourself with
    /// [`crate::layer`] and [`crate::propagation`] instead.
    #[error("a global tracing subscriber is already installed: {0}")]
    SubscriberAlreadySet(String),
    /// Flushing or shutting down the tracer provider failed (the collector unreachable, say).
    #[error("OpenTelemetry SDK: {0}")]
    Sdk(String),
}
