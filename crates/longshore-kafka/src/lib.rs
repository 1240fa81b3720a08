//! # longshore-kafka
//!
//! longshore's Kafka adapter on [rdkafka](https://docs.rs/rdkafka) (librdkafka, built from
//! source): [`KafkaBroker`] implements [`Broker`](longshore_core::Broker) (URL scheme `kafka`)
//! and hands out a [`KafkaPublisher`] with idempotent `acks=all` delivery and a
//! [`KafkaSubscriber`] whose subscriptions are consumer groups with per-partition contiguous
//! offset commits.
//!
//! See [`mapping`] for how longshore topics and patterns map to Kafka topics, and
//! [`KafkaConfig::from_url`] for the URL options.
//!
//! Laid out on the adapter template (see ARCHITECTURE.md): `config`, `client` (the state all
//! handles share), `broker` (the handle), `publisher`, `subscriber` (a folder: the consumer
//! thread, its group state, plans and streams), `acker`, `mapping` (topics, headers, record
//! conversion), `health` (health and lag), `error`; then what only Kafka has: `offsets`
//! (per-partition contiguous commits), `command` (what a consumer thread is told) and `delay`
//! (durable delayed nacks).
//!
//! A nack with a delay is durable (`native_delay`): the message is copied to the
//! subscription's delay topic `longshore.delay.<subscription>` (acks=all) and the original
//! settled; the subscription's consumers read that topic too and hold each copy, its offset
//! uncommitted, until its time, then deliver it as a message of its original topic with the
//! attempt count carried on. Held copies cost the consumer's memory, and the delay topic's
//! retention must exceed the longest delay (see the crate README).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod acker;
mod broker;
mod client;
mod command;
pub mod config;
mod delay;
mod error;
#[cfg(test)]
mod fuzz;
mod group_state;
mod health;
pub mod mapping;
mod offsets;
mod publisher;
mod subscriber;

pub use broker::KafkaBroker;
pub use config::KafkaConfig;
pub use error::KafkaError;
pub use mapping::TopicMap;
pub use publisher::KafkaPublisher;
pub use subscriber::KafkaSubscriber;

/// The record mapping, for the `longshore-fuzz` crate only (feature `fuzzing`; not an API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use crate::mapping::{Packed, Parts};

    /// Packs a record as the consumer thread does and unpacks it as the stream does; returns
    /// the message id, the longshore topic, the payload length and the header count.
    pub fn record(
        payload: &[u8],
        key: Option<&[u8]>,
        id: Option<&[u8]>,
        topic: Option<&[u8]>,
        headers: &[(String, Option<Vec<u8>>)],
    ) -> (String, String, usize, usize) {
        let parts = Parts {
            kafka_topic: "fuzz",
            partition: 0,
            offset: 0,
            payload,
            key,
            id,
            topic,
        };
        let (m, t) = Packed::pack(
            &parts,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())),
        )
        .unpack();
        (m.id, t, m.payload.len(), m.headers.len())
    }
}

/// Backend name used in capabilities, health and errors.
pub const BACKEND: &str = "kafka";
