//! # longshore-rabbitmq
//!
//! longshore's RabbitMQ adapter on [lapin](https://docs.rs/lapin) 4: [`RabbitBroker`]
//! implements [`Broker`](longshore_core::Broker) (URL schemes `amqp` and `amqps`) and hands out
//! the [`Publisher`](longshore_core::Publisher) and [`Subscriber`](longshore_core::Subscriber)
//! ports on the seed's topology.
//!
//! - One durable **topic exchange** (default [`DEFAULT_EXCHANGE`] = `"longshore"`, set with
//!   [`RabbitConfig::exchange`] or `?exchange=` in the URL); topic = routing key.
//! - **Publishing**: persistent messages, `message_id` = [`Message::id`](longshore_core::Message),
//!   `content_type` from the `content-type` header, other headers and the key in the AMQP
//!   header table; publisher confirms always on; `mandatory` so that an unroutable message is
//!   a typed error ([`Unroutable::Error`], the default); batches pipeline their confirms.
//! - **Subscriptions**: a durable queue named exactly as the subscription, bound by each
//!   pattern and declared with the seed's arguments (`x-dead-letter-exchange = "dlx"`,
//!   `x-dead-letter-routing-key = "dlq.<queue>"`); `dlx` is a durable direct exchange and
//!   `dlq.<queue>` a durable queue bound to it. With [`QueueType::Quorum`]
//!   (`?queue_type=quorum`) both are quorum queues (`x-queue-type: quorum`). Prefetch is
//!   `basic.qos` on the consumer's own channel; acknowledgements are manual.
//! - **Dead letters** are republished to `dlx` with confirms and then the original is acked,
//!   so the reason, original topic, subscription and attempt headers survive (see README).
//! - **Delayed nacks** wait in the broker, durably, without a plugin: the delivery's copy goes
//!   the [`DELAY_LEVELS`] TTL queues `<exchange>.delay.<k>` (level `k` holds it `2^k` ×
//!   [`DELAY_UNIT`], then dead-letters it down to level `k - 1`, level 0 to
//!   `<exchange>.delay.deliver`), routed back to the
//!   nacking subscription's queue only; the delivery is acked once the copy is confirmed, so it
//!   frees its prefetch slot. 100 ms steps (rounded up), at most [`MAX_DELAY`] (about 310
//!   days; longer is clamped); topic and attempt count survive the trip (see README).
//! - **Scheduled publish** is native (`native_schedule`): a message whose `x-deliver-at` is at
//!   least 100 ms ahead goes into the same levels (delay rounded up, never early), keyed by
//!   its topic, and fans out when due through `<exchange>.delay.scheduled`, where every
//!   subscription is bound once per pattern; `Ok` once the level's queue confirmed it. One no
//!   subscription matches when due is kept in the queue `<exchange>.delay.unrouted`. No
//!   cancel: a message in a queue cannot be withdrawn by id (see README).
//! - **Recovery**: one connection per broker handle, re-opened with backoff when it drops;
//!   publishers retry unconfirmed messages on a new channel until `publish_timeout`, consumers
//!   re-declare their topology and re-subscribe.
//!
//! ```no_run
//! use longshore_core::{Broker, Message, Subscription};
//! use longshore_rabbitmq::{RabbitBroker, RabbitConfig};
//! # async fn f() -> Result<(), longshore_core::Error> {
//! let broker = RabbitBroker::connect(RabbitConfig::from_url(
//!     "amqp://guest:guest@127.0.0.1:5672/%2f?exchange=orders",
//! )?)
//! .await?;
//! let subscriber = broker.subscriber();
//! let stream = subscriber
//!     .subscribe(&Subscription::new("billing", ["events.order_created"]))
//!     .await?;
//! broker
//!     .publisher()
//!     .publish("events.order_created", Message::new(&b"{}"[..]))
//!     .await?;
//! # drop(stream); Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Laid out on the adapter template: config, client (the shared connection), broker (the
// handle), publisher, subscriber, acker, mapping, health, error; `confirm` is the confirm
// channel publishers, dead letters and delayed nacks share; `delay` the delay levels;
// `schedule` what sends a scheduled publish into them.
mod acker;
mod broker;
mod client;
mod config;
mod confirm;
mod delay;
mod error;
mod health;
mod mapping;
mod publisher;
mod returns;
mod schedule;
mod subscriber;

pub use broker::RabbitBroker;
pub use config::{
    QueueType, RabbitConfig, Unroutable, BROKER_MAX_MESSAGE_SIZE, DEAD_LETTER_EXCHANGE,
    DEFAULT_EXCHANGE, DEFAULT_URL,
};
pub use delay::{DELAY_UNIT, LEVELS as DELAY_LEVELS, MAX_DELAY};
pub use error::RabbitError;
pub use mapping::{
    dead_letter_queue_arguments, queue_arguments, subscription_queue_arguments, KEY_HEADER,
};
pub use publisher::RabbitPublisher;
pub use subscriber::RabbitSubscriber;

/// Backend name used in errors, health and capabilities.
pub const BACKEND: &str = "rabbitmq";

// `cargo test --doc` compiles the README's example.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
