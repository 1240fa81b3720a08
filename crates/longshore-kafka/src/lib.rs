//! # longshore-kafka
//!
//! longshore's Kafka adapter on [rdkafka](https://docs.rs/rdkafka) (librdkafka, built from
//! source): a [`KafkaPublisher`] with idempotent `acks=all` delivery and a [`KafkaSubscriber`]
//! whose subscriptions are consumer groups with per-partition contiguous offset commits.
//!
//! See [`mapping`] for how longshore topics and patterns map to Kafka topics, and the
//! [`consumer`] module docs for the offset rules.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod broker;
pub mod config;
pub mod consumer;
mod error;
mod health;
mod lag;
pub mod mapping;
mod offsets;
mod producer;
mod record;

pub use broker::KafkaBroker;
pub use config::KafkaConfig;
pub use consumer::KafkaSubscriber;
pub use error::KafkaAdapterError;
pub use mapping::TopicMap;
pub use producer::KafkaPublisher;
