//! # longshore
//!
//! Ports-and-adapters messaging for event-driven Rust services: one API for publishing,
//! consuming and storing domain events, on RabbitMQ, Kafka, NATS JetStream, PostgreSQL or in
//! memory, chosen by URL.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use longshore::prelude::*;
//!
//! let ls = longshore::connect("memory://").await?;
//! let publisher = EventPublisher::new(ls.publisher.clone());
//! let sub = Subscription::new("billing", ["events.order_created"]);
//! ls.subscriber.ensure_subscription(&sub).await?;
//! publisher.publish(&Event::new("order_created", serde_json::json!({"order_id": "o-1"}))).await?;
//! # Ok(()) }
//! ```
//!
//! Features pick the adapters compiled in: `memory` (default), `rabbitmq`, `kafka`, `nats`,
//! `postgres`; `otel` adds OpenTelemetry export (`longshore::otel`); `full` is all of them. A URL whose adapter is not compiled in is
//! [`ConnectError::FeatureDisabled`], naming the feature.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod connect;

pub use config::{Config, ENV_STORE_URL, ENV_URL};
pub use connect::{connect, connect_with, ConnectError, Longshore};
pub use longshore_core as core;
pub use longshore_core::*;

/// The in-memory adapter (always available).
pub use longshore_core::memory;

/// The RabbitMQ adapter (lapin).
#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
pub use longshore_rabbitmq as rabbitmq;

/// The Kafka adapter (rdkafka).
#[cfg(feature = "kafka")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka")))]
pub use longshore_kafka as kafka;

/// The NATS JetStream adapter (async-nats).
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub use longshore_nats as nats;

/// The PostgreSQL adapter (sqlx): event store, outbox, inbox and queue.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use longshore_postgres as postgres;

/// OpenTelemetry: OTLP span export and trace propagation (`longshore-otel`).
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub use longshore_otel as otel;

/// The names most services need, for `use longshore::prelude::*`.
pub mod prelude {
    pub use longshore_core::{
        Consumer, DomainEvent, Event, EventPublisher, EventStore, ExpectedVersion, HandlerContext,
        HandlerError, Message, Publisher, RetryPolicy, Subscriber, Subscription,
        UnknownEventPolicy,
    };
}
