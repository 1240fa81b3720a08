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
//! `postgres`, `sqlite`; `otel` adds OpenTelemetry export (`longshore::otel`); `asyncapi` an AsyncAPI
//! 3.0 document of a service's events (`longshore::asyncapi`); `full` is all of them;
//! `testing` adds the test harness for services (`longshore::testing`). A URL whose adapter is
//! not compiled in is [`ConnectError::FeatureDisabled`], naming the feature.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod config;
mod connect;
mod dead_letters;
mod drivers;
mod health;
#[cfg(feature = "health-server")]
mod serve;
mod watched;

pub use config::{Config, ENV_SERVICE, ENV_STORE_URL, ENV_URL};
pub use connect::{connect, connect_with, ConnectError, Longshore};
pub use health::{ConsumerStatus, ServiceHealth, StoreHealth};
/// `/health`, `/ready` and `/metrics` over HTTP (feature `health-server`).
#[cfg(feature = "health-server")]
#[cfg_attr(docsrs, doc(cfg(feature = "health-server")))]
pub use serve::{install_prometheus, use_prometheus, HealthServer};
// Core's items by name, so each has one path in the facade (sqlx's rule).
pub use longshore_core::{
    async_trait, dead_letter_message, dead_letter_topic, fit_dead_letter, format_timestamp, now,
    parse_timestamp, rfc3339, run_catch_up, subscribe_all, Acker, AppendResult, BatchError,
    BoxError, BreakerState, Broker, Capabilities, CatchUpError, CircuitBreaker, Codec, CodecError,
    Consumer, ConsumerHandle, ConsumerHealth, ConsumerStats, Data, DeadLetter, Delivery,
    DeliveryStream, DomainEvent, Error, Event, EventPublisher, EventStore, EventStream,
    EventStreamError, ExpectedVersion, FailedMessage, HandlerContext, HandlerError, HandlerFuture,
    Headers, Health, Inbox, JsonCodec, Message, Metadata, Outbox, OutboxMessage, OutboxRelay,
    Publisher, RecordedEvent, RecordedStream, RelayError, RelayReport, Result, RetryPolicy,
    StoreError, Stores, Subscriber, Subscription, UnknownEventPolicy, CONTENT_TYPE_JSON,
    DEFAULT_LAG_INTERVAL, DEFAULT_PREFETCH, HEADER_AGGREGATE_ID, HEADER_CAUSATION_ID,
    HEADER_CONTENT_TYPE, HEADER_CORRELATION_ID, HEADER_DLQ_AT, HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_REASON, HEADER_DLQ_SUBSCRIPTION, HEADER_DLQ_TOPIC, HEADER_DLQ_TRUNCATED,
    MAX_HEADERS, MAX_HEADER_VALUE,
};
// Time in messages: scheduled publish, expiry, retries the broker waits out.
pub use longshore_core::{cloudevents, memory, observe, topic, url};
pub use longshore_core::{
    ExpiredPolicy, ScheduleId, DEFAULT_DURABLE_AFTER, HEADER_DELIVER_AT, HEADER_EXPIRES_AT,
};
// The outbox relay's handle and health, and consumer probes (for `Longshore::health`).
pub use longshore_core::{
    ConsumerProbe, FailedOutboxMessage, RelayHandle, RelayHealth, RelayProbe, TopicMapper,
};
// Stateful handlers and aggregates.
pub use longshore_core::{
    Aggregate, AggregateStore, ExecuteError, Executed, HandlerResultExt, Loaded, WithState,
    MAX_CONFLICT_RETRIES,
};

/// The `chrono` crate longshore's timestamps use (`Event::timestamp` is a `DateTime<Utc>`).
pub use chrono;
/// The `uuid` crate longshore's ids use (`Event::id` is a `Uuid`).
pub use uuid;
// The dead-letter operations (`Longshore::dead_letters`).
pub use longshore_core::{
    DeadLetterFilter, DeadLetterRecord, DeadLetters, ReplayReport, ReplayStep, DEAD_LETTER_HEADERS,
};

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

/// The SQLite adapter (sqlx, bundled SQLite): queue, event store, outbox and inbox in one file.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use longshore_sqlite as sqlite;

/// OpenTelemetry: OTLP span export and trace propagation (`longshore-otel`).
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub use longshore_otel as otel;

/// An AsyncAPI 3.0 document generated from the event types a service declares.
#[cfg(feature = "asyncapi")]
#[cfg_attr(docsrs, doc(cfg(feature = "asyncapi")))]
pub mod asyncapi;

/// A test harness for services built on longshore: `TestBus` records what was published,
/// handled, retried and dead-lettered on any backend and waits until all work is done.
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

/// The names most services need, for `use longshore::prelude::*`: consuming and publishing,
/// the event store with aggregates, the outbox relay, and the error types handlers meet.
/// (`Error` and `Result` stay out, so a glob import shadows nothing of the service's.)
pub mod prelude {
    pub use crate::{Config, Longshore};
    pub use chrono::{DateTime, Utc};
    pub use longshore_core::{
        Aggregate, AggregateStore, BoxError, Consumer, ConsumerHandle, DomainEvent, Event,
        EventPublisher, EventStore, ExecuteError, ExpectedVersion, HandlerContext, HandlerError,
        HandlerResultExt, Health, Inbox, Message, Outbox, OutboxRelay, Publisher, RecordedEvent,
        RelayHandle, RetryPolicy, ScheduleId, StoreError, Subscriber, Subscription,
        UnknownEventPolicy,
    };
    pub use uuid::Uuid;
}
