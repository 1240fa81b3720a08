//! Keeps the exporter alive and sends the last spans at shutdown.

use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::error::OtelError;

/// Returned by [`crate::init`]. Dropping it flushes the spans not yet sent and shuts the
/// exporter down (blocking for at most the export timeout); [`OtelGuard::shutdown`] does the
/// same and reports failures.
#[derive(Debug)]
pub struct OtelGuard {
    provider: Option<SdkTracerProvider>,
}

impl OtelGuard {
    /// Guards `provider` (one built by [`crate::tracer_provider`], say).
    pub fn new(provider: SdkTracerProvider) -> Self {
        OtelGuard {
            provider: Some(provider),
        }
    }

    /// The tracer provider, to make tracers for spans that do not come through `tracing`.
    pub fn provider(&self) -> Option<&SdkTracerProvider> {
        self.provider.as_ref()
    }

    /// Sends every finished span now, blocking until the collector answered. Exports run on
    /// their own thread, so this is safe on any thread, though in async code it holds up the
    /// task that calls it.
    pub fn flush(&self) -> Result<(), OtelError> {
        match &self.provider {
            Some(p) => p.force_flush().map_err(|e| OtelError::Sdk(e.to_string())),
            None => Ok(()),
        }
    }

    /// Flushes and shuts down the exporter; spans ended afterwards are dropped.
    pub fn shutdown(mut self) -> Result<(), OtelError> {
        match self.provider.take() {
            Some(p) => p.shutdown().map_err(|e| OtelError::Sdk(e.to_string())),
            None => Ok(()),
        }
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("longshore-otel: shutting down the exporter failed: {e}");
            }
        }
    }
}
