//! `/health`, `/ready` and `/metrics` over HTTP for one [`Longshore`] (feature
//! `health-server`), so a service does not write its own endpoint.

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::connect::Longshore;
use crate::health::ServiceHealth;

/// The recorder `/metrics` renders, once one is installed or handed over.
static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs a Prometheus recorder (metrics-exporter-prometheus, default settings) as the
/// global `metrics` recorder, and serves it on `/metrics` of every [`Longshore::serve_health`].
/// Call it once, before connecting, so every metric is recorded from the start.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    use_prometheus(handle.clone());
    Ok(handle)
}

/// Serves `handle` on `/metrics`, for a service that installed its own Prometheus recorder
/// (custom buckets, global labels). The first handle given wins.
pub fn use_prometheus(handle: PrometheusHandle) {
    let _ = PROMETHEUS.set(handle);
}

/// A running health endpoint, from [`Longshore::serve_health`].
#[derive(Debug)]
pub struct HealthServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthServer {
    /// The address it listens on (the port the OS chose, when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening; requests in flight finish first.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Longshore {
    /// Serves this connection's health on `addr` until the returned server is shut down or
    /// dropped:
    ///
    /// - `GET /health`: [`Longshore::health`] as JSON; 200 when ready, 503 otherwise.
    /// - `GET /ready`: `ready`, or what is not (one line each); 200 or 503.
    /// - `GET /metrics`: Prometheus text, once [`install_prometheus`] or [`use_prometheus`]
    ///   gave it a recorder; 404 saying so before.
    pub async fn serve_health(&self, addr: SocketAddr) -> std::io::Result<HealthServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/health", get(health))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state(self.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "health endpoint stopped");
            }
        });
        Ok(HealthServer {
            addr,
            stop: Some(stop),
            task,
        })
    }
}

fn status(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn health(State(ls): State<Longshore>) -> (StatusCode, Json<ServiceHealth>) {
    let health = ls.health().await;
    (status(health.is_ready()), Json(health))
}

async fn ready(State(ls): State<Longshore>) -> (StatusCode, String) {
    let health = ls.health().await;
    if health.is_ready() {
        return (StatusCode::OK, "ready\n".into());
    }
    let mut body = health.problems().join("\n");
    body.push('\n');
    (status(false), body)
}

async fn metrics() -> (StatusCode, String) {
    match PROMETHEUS.get() {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::NOT_FOUND,
            "no Prometheus recorder: call longshore::install_prometheus() (or use_prometheus) at startup\n"
                .into(),
        ),
    }
}
