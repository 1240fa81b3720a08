//! The RabbitMQ broker handle: one connection, the factory of publishers and subscribers on it.

use std::sync::Arc;

use longshore_core::{async_trait, Broker, Capabilities, Error, Health, Publisher, Subscriber};

use crate::client::{capabilities, Client};
use crate::config::RabbitConfig;
use crate::health;
use crate::publisher::RabbitPublisher;
use crate::subscriber::RabbitSubscriber;
use crate::BACKEND;

/// A connection to RabbitMQ and the factory of publishers and subscribers on it
/// ([`Broker`]).
///
/// Clones share the one connection; each publisher and each consumer gets its own channel.
#[derive(Clone)]
pub struct RabbitBroker {
    client: Arc<Client>,
}

impl std::fmt::Debug for RabbitBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitBroker")
            .field("config", &self.client.config)
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
            client: Client::connect(config).await?,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RabbitConfig {
        &self.client.config
    }

    /// Whether the connection is up (it is re-opened on demand when not).
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// How many times the connection was re-opened after it dropped.
    pub fn reconnects(&self) -> u64 {
        self.client.reconnects()
    }
}

#[async_trait]
impl Broker for RabbitBroker {
    fn schemes() -> &'static [&'static str] {
        &["amqp", "amqps"]
    }

    /// [`RabbitBroker::connect`] with [`RabbitConfig::from_url`].
    async fn connect_url(url: &str) -> Result<Self, Error> {
        Self::connect(RabbitConfig::from_url(url)?).await
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// A publisher with its own confirm channel.
    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(RabbitPublisher::new(self.client.clone()))
    }

    /// A subscriber; each `subscribe` opens a channel for that consumer.
    fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(RabbitSubscriber::new(self.client.clone()))
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.client.config)
    }

    /// The connection's health: connected (re-opening a dropped connection, waiting at most
    /// 2 s for it) and both exchanges present. Not ready after [`Broker::close`].
    async fn health(&self) -> Health {
        health::report(&self.client, None).await
    }

    /// Closes the connection; every handle made from this broker fails afterwards.
    async fn close(&self) -> Result<(), Error> {
        self.client.close().await
    }
}
