//! # longshore-nats
//!
//! The NATS JetStream adapter for longshore, on [`async_nats`]: [`NatsBroker`] implements
//! [`longshore_core::Broker`] for `nats://` and `tls://` URLs.
//!
//! - **Publishing** goes through JetStream only (never core NATS publish): every publish waits
//!   for its PubAck; `Nats-Msg-Id` is the message id, so a retried publish (after a PubAck
//!   timeout, say) is stored once, and a duplicate ack counts as success. Batches keep up to
//!   `max_acks_in_flight` PubAcks in flight.
//! - **Subjects**: topic `a.b` is subject `<prefix>.a.b` (prefix `longshore` by default, empty
//!   for subject = topic). One stream (`LONGSHORE`, file storage, created on first use)
//!   captures `<prefix>.>`, dead letters (`dlq.<subscription>`) included.
//! - **Subscriptions** are durable pull consumers named after the subscription (`.` written
//!   `_d`, `_` written `__`); competing consumers share the durable, each subscription has its
//!   own (fan-out). Patterns: `*` → `*`, a trailing `#` → the subject itself and `.>`. On
//!   nats-server >= 2.10 several patterns become `filter_subjects`; on 2.9 (one filter per
//!   consumer) the consumer takes one wider filter and deliveries are matched on the client,
//!   the others acked unseen. A message matching several patterns is one stream message, so it
//!   arrives once.
//! - **Settling**: ack, nak (with delay), in-progress acks while a delivery is unsettled,
//!   `+TERM` after a dead letter was stored in `dlq.<subscription>`; an acker dropped unsettled
//!   naks at once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), longshore_core::Error> {
//! use futures::StreamExt;
//! use longshore_core::{Broker, Message, Subscription};
//! use longshore_nats::NatsBroker;
//!
//! let broker = NatsBroker::connect_url("nats://127.0.0.1:4222").await?;
//! let (publisher, subscriber) = (broker.publisher(), broker.subscriber());
//! let mut deliveries = subscriber
//!     .subscribe(&Subscription::new("billing", ["orders.#"]))
//!     .await?;
//! publisher.publish("orders.created", Message::new(&b"{}"[..])).await?;
//! if let Some(Ok(delivery)) = deliveries.next().await {
//!     delivery.ack().await?;
//! }
//! broker.close().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Laid out on the adapter template: config, client (the shared connection), broker (the
// handle), publisher, subscriber, acker, mapping, health, error. Beside them: `confirm` (the
// PubAck pipeline publishers and dead letters share), `durable` (a subscription's durable
// consumer) and `puller` (one consumer's pull loop).
mod acker;
mod broker;
mod client;
mod config;
mod confirm;
mod durable;
mod error;
mod health;
mod mapping;
mod publisher;
mod puller;
mod subscriber;

pub use broker::NatsBroker;
pub use client::HEADER_HEADROOM;
pub use config::{NatsConfig, Storage};
pub use error::NatsError;
pub use mapping::{HEADER_ID, HEADER_KEY, NATS_MSG_ID};
pub use publisher::NatsPublisher;
pub use subscriber::NatsSubscriber;

/// The client crate, for settings the adapter does not cover.
pub use async_nats;

/// Backend name used in errors, health and capabilities.
pub const BACKEND: &str = "nats";

// `cargo test --doc` compiles the README's example.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
