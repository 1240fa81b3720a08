//! # longshore-rabbitmq
//!
//! longshore's RabbitMQ adapter on [lapin](https://docs.rs/lapin) 4: the
//! [`Publisher`](longshore_core::Publisher) and [`Subscriber`](longshore_core::Subscriber)
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
//!   `dlq.<queue>` a durable queue bound to it. Prefetch is `basic.qos` on the consumer's own
//!   channel; acknowledgements are manual.
//! - **Dead letters** are republished to `dlx` with confirms and then the original is acked,
//!   so the reason, original topic, subscription and attempt headers survive (see README).
//! - **Recovery**: one connection per broker handle, re-opened with backoff when it drops;
//!   publishers retry unconfirmed messages on a new channel until `publish_timeout`, consumers
//!   re-declare their topology and re-subscribe.
//!
//! ```no_run
//! use longshore_core::{Message, Publisher, Subscriber, Subscription};
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

mod config;
mod connection;
mod convert;
mod error;
mod health;
mod publisher;
mod subscriber;

use std::sync::Arc;

use longshore_core::{Capabilities, Error, Health};

pub use config::{
    RabbitConfig, Unroutable, BROKER_MAX_MESSAGE_SIZE, DEAD_LETTER_EXCHANGE, DEFAULT_EXCHANGE,
    DEFAULT_URL,
};
pub use convert::KEY_HEADER;
pub use error::{RabbitError, BACKEND};
pub use publisher::RabbitPublisher;
pub use subscriber::{queue_arguments, RabbitSubscriber};

/// A connection to RabbitMQ and the factory of publishers and subscribers on it.
///
/// Clones share the one connection; each publisher and each consumer gets its own channel.
#[derive(Clone)]
pub struct RabbitBroker {
    shared: Arc<connection::Shared>,
}

impl std::fmt::Debug for RabbitBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBroker")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl RabbitBroker {
    /// Connects and declares the exchanges. Fails within `connect_timeout` with a typed
    /// error: [`Error::Unauthorized`] for refused credentials, [`Error::Config`] for a missing
    /// virtual host or a bad URL, [`Error::Connection`] / [`Error::Timeout`] for an unreachable
    /// broker.
    pub async fn connect(config: RabbitConfig) -> Result<Self, Error> {
        Ok(RabbitBroker {
            shared: connection::Shared::connect(config).await?,
        })
    }

    /// [`RabbitBroker::connect`] with [`RabbitConfig::from_url`].
    pub async fn connect_url(url: &str) -> Result<Self, Error> {
        Self::connect(RabbitConfig::from_url(url)?).await
    }

    /// A publisher with its own confirm channel.
    pub fn publisher(&self) -> RabbitPublisher {
        RabbitPublisher::new(self.shared.clone())
    }

    /// A subscriber; each `subscribe` opens a channel for that consumer.
    pub fn subscriber(&self) -> RabbitSubscriber {
        RabbitSubscriber::new(self.shared.clone())
    }

    /// The configuration in use.
    pub fn config(&self) -> &RabbitConfig {
        &self.shared.config
    }

    /// What this backend can do.
    pub fn capabilities(&self) -> Capabilities {
        capabilities(&self.shared.config)
    }

    /// Whether the connection is up (it is re-opened on demand when not).
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// How many times the connection was re-opened after it dropped.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects()
    }

    /// The connection's health: connected (re-opening a dropped connection, waiting at most
    /// 2 s for it) and both exchanges present. Not ready after [`RabbitBroker::close`].
    pub async fn health(&self) -> Health {
        health::report(&self.shared, None).await
    }

    /// Closes the connection; every handle made from this broker fails afterwards.
    pub async fn close(&self) -> Result<(), Error> {
        self.shared.close().await
    }
}

/// The RabbitMQ capabilities: no native delay (nack with a delay waits in process), no replay,
/// order kept for one consumer, no dedup window, and no delivery count: classic queues only
/// flag a redelivery, so `Delivery::attempt` is 1 for a first delivery and 2 for any
/// redelivery (a quorum queue's `x-delivery-count` is used when present).
pub(crate) fn capabilities(config: &RabbitConfig) -> Capabilities {
    let mut caps = Capabilities::new(BACKEND, config.max_payload);
    caps.ordered_by_key = true;
    caps.delivery_count = false;
    caps.native_delay = false;
    caps
}
