//! # longshore-core
//!
//! The domain event envelope, the codecs, the ports (publisher, subscriber, event store,
//! outbox, inbox), the broker-neutral consumer runtime and the in-memory adapter.
//!
//! Core knows no broker: adapter crates (`longshore-rabbitmq`, `longshore-kafka`,
//! `longshore-nats`, `longshore-postgres`) implement the ports, and the facade crate
//! `longshore` picks one by URL.
//!
//! Layers, bottom up (as in Watermill):
//! - transport: [`Message`], [`Publisher`], [`Subscriber`] → [`Delivery`] (ack / nack /
//!   dead-letter, each consuming the delivery);
//! - events: [`Event`], [`DomainEvent`], [`Codec`] ([`JsonCodec`] is the seed's wire form,
//!   [`cloudevents::CloudEventsCodec`] CloudEvents 1.0; both decode both), [`EventPublisher`];
//! - runtime: [`Consumer`] (dispatch by type, retries, dead letters, ordering by key, batch
//!   handlers, flow control, graceful shutdown),
//!   [`EventStream`], [`OutboxRelay`], catch-up subscriptions.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod aggregate;
mod broker;
mod capabilities;
mod catch_up;
mod codec;
mod dead_letters;
mod error;
mod event;
mod event_data;
mod event_publisher;
mod event_stream;
mod group_commit;
mod health;
mod inbox;
mod message;
mod outbox;
mod outstanding;
mod publisher;
mod relay;
mod relay_health;
mod retry;
mod runtime;
mod schedule;
mod seed;
mod store;
mod subscriber;

pub mod cloudevents;
pub mod memory;
pub mod observe;
pub mod topic;
pub mod url;

pub use aggregate::{
    Aggregate, AggregateStore, ExecuteError, Executed, Loaded, MAX_CONFLICT_RETRIES,
};
pub use broker::{Broker, ConnectFuture, Driver, Stores};
pub use capabilities::Capabilities;
pub use catch_up::{run_catch_up, subscribe_all, CatchUpError};
pub use codec::{
    format_timestamp, parse_timestamp, rfc3339, Codec, JsonCodec, CONTENT_TYPE_JSON,
    HEADER_AGGREGATE_ID, HEADER_CAUSATION_ID, HEADER_CONTENT_TYPE, HEADER_CORRELATION_ID,
};
pub use dead_letters::{
    DeadLetterFilter, DeadLetterRecord, DeadLetters, ReplayReport, ReplayStep, DEAD_LETTER_HEADERS,
    DEFAULT_MAX_LETTERS,
};
pub use error::{BatchError, BoxError, CodecError, Error, FailedMessage, Result};
pub use event::{now, DomainEvent, Event, Metadata};
pub use event_data::Data;
pub use event_publisher::EventPublisher;
pub use event_stream::{EventStream, EventStreamError};
pub use group_commit::{topic_runs, GroupCommit};
pub use health::Health;
pub use inbox::Inbox;
pub use message::{Headers, Message, MAX_HEADERS, MAX_HEADER_VALUE};
pub use outbox::{FailedOutboxMessage, Outbox, OutboxMessage};
pub use outstanding::{Outstanding, Tracked};
pub use publisher::Publisher;
pub use relay::{OutboxRelay, RelayError, RelayHandle, RelayProbe, RelayReport, TopicMapper};
pub use relay_health::RelayHealth;
pub use retry::{RetryPolicy, DEFAULT_DURABLE_AFTER};
pub use runtime::{
    BreakerState, CircuitBreaker, Consumer, ConsumerHandle, ConsumerHealth, ConsumerProbe,
    ConsumerStats, ExpiredPolicy, HandlerContext, HandlerError, HandlerFuture, HandlerResultExt,
    UnknownEventPolicy, WithState, DEFAULT_LAG_INTERVAL,
};
pub use schedule::{ScheduleId, HEADER_DELIVER_AT, HEADER_EXPIRES_AT};
pub use store::{
    AppendResult, EventStore, ExpectedVersion, RecordedEvent, RecordedStream, StoreError,
};
pub use subscriber::{
    dead_letter_message, dead_letter_topic, fit_dead_letter, Acker, DeadLetter, Delivery,
    DeliveryStream, Subscriber, Subscription, DEFAULT_PREFETCH, HEADER_DLQ_AT, HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_REASON, HEADER_DLQ_SUBSCRIPTION, HEADER_DLQ_TOPIC, HEADER_DLQ_TRUNCATED,
};

/// Re-exported so adapters and services implement the ports with the same macro version.
pub use async_trait::async_trait;

// `cargo test --doc` compiles and runs the README's examples.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
