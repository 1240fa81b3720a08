//! The HTTP client the OTLP exporter sends with: hyper on a small runtime of its own.
//!
//! The SDK's batch processor exports from a plain thread with a blocking executor, and hyper
//! needs a Tokio runtime. Borrowing the application's runtime would deadlock a current-thread
//! runtime whose only thread is waiting for a flush, so exports run on one dedicated
//! current-thread runtime instead: flushing and shutting down work from any thread, inside
//! a runtime or not.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::OtelError;

/// Sends OTLP requests on the export thread's runtime.
pub(crate) struct ExportClient {
    handle: Handle,
    inner: HyperClient,
    // Dropping the sender ends the export thread (and its runtime).
    _stop: oneshot::Sender<()>,
}

impl fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportClient").finish_non_exhaustive()
    }
}

impl ExportClient {
    /// Starts the export thread; `timeout` bounds each request.
    pub(crate) fn start(timeout: Duration) -> Result<Self, OtelError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(OtelError::Runtime)?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("longshore-otel-export".into())
            .spawn(move || {
                // Spawned exports run while this waits; the sender's drop (or a send) ends it.
                let _ = runtime.block_on(stopped);
            })
            .map_err(OtelError::Runtime)?;
        // hyper's pool and connector belong to the runtime that drives them.
        let inner = {
            let _entered = handle.enter();
            HyperClient::with_default_connector(timeout, None)
        };
        Ok(ExportClient {
            handle,
            inner,
            _stop: stop,
        })
    }
}

#[async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let inner = self.inner.clone();
        self.handle
            .spawn(async move { inner.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as HttpError)?
    }
}
