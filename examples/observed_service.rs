//! A service that can be watched: Prometheus metrics on `/metrics`, readiness on `/health`
//! and `/ready` (broker, store and the order consumer, served by `Longshore::serve_health`),
//! and logs whose spans carry the trace id from publisher to consumer.
//!
//! Runs on the embedded in-memory backend by default, serving on 127.0.0.1:9464:
//!     cargo run --example observed_service
//!     curl -s 127.0.0.1:9464/metrics | grep longshore_
//!     curl -s 127.0.0.1:9464/health
//!     curl -s 127.0.0.1:9464/ready
//! Any backend by URL (with its feature compiled in), any address:
//!     LONGSHORE_URL=nats://127.0.0.1:4222 LONGSHORE_HTTP=127.0.0.1:9000 \
//!         cargo run --features full --example observed_service
//! It publishes one order a second and stops after LONGSHORE_ORDERS orders (default: forever).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use longshore::observe::{names, TraceContext};
use longshore::prelude::*;
use longshore::{ConsumerHandle, ConsumerStats, HealthServer};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub total_cents: u64,
}
impl DomainEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order_placed";
}

/// A running service: its HTTP address and how to stop it.
pub struct Service {
    /// Where `/metrics` and `/health` are served.
    pub addr: SocketAddr,
    /// The backend handles (to publish from tests).
    pub ls: longshore::Longshore,
    /// The topic orders are published to.
    pub topic: String,
    consumer: ConsumerHandle,
    server: HealthServer,
}

impl Service {
    /// The consumer's counters so far.
    pub fn stats(&self) -> ConsumerStats {
        self.consumer.stats()
    }

    /// Stops consuming (letting handlers finish) and stops serving.
    pub async fn stop(self) -> ConsumerStats {
        let stats = self.consumer.shutdown(Duration::from_secs(10)).await;
        self.server.shutdown().await;
        stats
    }
}

/// The process-wide Prometheus recorder. Installed once, before any handle is created, because
/// metric handles registered earlier would stay no-ops.
pub fn prometheus() -> Result<PrometheusHandle, BoxError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    // Latency histograms get buckets (from 1 ms to 10 s) instead of summaries, so they can be
    // aggregated across instances.
    let buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
    ];
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)?
        .build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        return Err("another metrics recorder is already installed".into());
    }
    // `serve_health` renders this recorder on /metrics.
    longshore::use_prometheus(handle.clone());
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Connects by `config`, starts the order consumer and serves `/metrics`, `/health` and
/// `/ready` on `addr` (port 0 picks a free one).
pub async fn start(config: &longshore::Config, addr: SocketAddr) -> Result<Service, BoxError> {
    prometheus()?;
    let ls = longshore::connect_with(config).await?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let topic = format!("shop{run}.orders.placed");
    let consumer = Consumer::new(
        ls.subscriber.clone(),
        Subscription::new(format!("observed-{run}"), [format!("shop{run}.orders.#")]),
    )
    .on(|order: OrderPlaced, _ctx| async move {
        // Logged inside the `longshore.handle` span: the line carries its trace_id.
        tracing::info!(order_id = %order.order_id, "order handled");
        Ok(())
    })
    .lag_interval(Some(Duration::from_secs(5)))
    .start()
    .await?;
    // The consumer is part of the service's health: not ready if it stops or its breaker opens.
    ls.watch_consumer("orders", &consumer);
    let server = ls.serve_health(addr).await?;
    let addr = server.local_addr();
    Ok(Service {
        addr,
        ls,
        topic,
        consumer,
        server,
    })
}

/// Publishes order `n` to the service's topic.
pub async fn place_order(service: &Service, n: u64) -> Result<(), BoxError> {
    let event = Event::from_typed(&OrderPlaced {
        order_id: format!("o-{n}"),
        total_cents: 100 * n,
    })?;
    // A new trace per order; the consumer's `longshore.handle` span continues it.
    let trace = TraceContext::new_root();
    tracing::info!(order_id = %format!("o-{n}"), trace_id = %trace.trace_id_hex(), "placing order");
    trace
        .scope(EventPublisher::new(service.ls.publisher.clone()).publish_to(&service.topic, &event))
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // RUST_LOG as written, but with the broker clients' wire tracing capped at debug:
    // lapin's trace level prints connection frames, credentials included.
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(
            longshore::observe::log_directives(&directives),
        )?)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let addr: SocketAddr = std::env::var("LONGSHORE_HTTP")
        .unwrap_or_else(|_| "127.0.0.1:9464".into())
        .parse()?;
    let orders: Option<u64> = match std::env::var("LONGSHORE_ORDERS") {
        Ok(n) => Some(n.parse()?),
        Err(_) => None,
    };
    let service = start(&longshore::Config::from_env(), addr).await?;
    println!(
        "backend {} — serving http://{}/metrics and http://{}/health ({} is one of the metrics)",
        service.ls.backend,
        service.addr,
        service.addr,
        names::PUBLISHED
    );
    let mut n = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {}
        }
        if orders.is_some_and(|max| n >= max) {
            break;
        }
        n += 1;
        if let Err(e) = place_order(&service, n).await {
            tracing::warn!(error = %e, "could not place an order");
        }
    }
    let stats = service.stop().await;
    println!("stopped: {stats:?}");
    Ok(())
}
