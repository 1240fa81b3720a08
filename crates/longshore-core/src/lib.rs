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
//! - events: [`Event`], [`DomainEvent`], [`Codec`] ([`JsonCodec`] is the seed's wire form),
//!   [`EventPublisher`];
//! - runtime: [`Consumer`] (dispatch by type, retries, dead letters, graceful shutdown),
//!   [`EventStream`], [`OutboxRelay`], catch-up subscriptions.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod capabilities;
pub mod catch_up;
pub mod codec;
pub mod error;
pub mod event;
pub mod event_publisher;
pub mod event_stream;
pub mod memory;
pub mod message;
pub mod observe;
pub mod outbox;
pub mod publisher;
pub mod relay;
pub mod retry;
pub mod runtime;
pub mod store;
pub mod subscriber;
pub mod topic;
pub mod url;

pub use capabilities::Capabilities;
pub use codec::{Codec, CodecError, JsonCodec};
pub use error::{BatchError, BoxError, Error, FailedMessage};
pub use event::{DomainEvent, Event, Metadata};
pub use event_publisher::EventPublisher;
pub use event_stream::{EventStream, EventStreamError};
pub use message::{Headers, Message};
pub use observe::{Health, TraceContext};
pub use outbox::{Inbox, Outbox, OutboxMessage};
pub use publisher::Publisher;
pub use relay::{OutboxRelay, RelayError, RelayReport};
pub use retry::RetryPolicy;
pub use runtime::{
    Consumer, ConsumerHandle, ConsumerStats, HandlerContext, HandlerError, UnknownEventPolicy,
};
pub use store::{AppendResult, EventStore, ExpectedVersion, RecordedEvent, StoreError};
pub use subscriber::{
    dead_letter_message, dead_letter_topic, Acker, DeadLetter, Delivery, DeliveryStream,
    Subscriber, Subscription,
};

/// Re-exported so adapters and services implement the ports with the same macro version.
pub use async_trait::async_trait;
