//! The NATS broker handle: one connection, the factory of publishers and subscribers on it.

use std::sync::Arc;

use async_nats::jetstream;
use longshore_core::{async_trait, Broker, Capabilities, Error, Health, Publisher, Subscriber};

use crate::client::Client;
use crate::config::NatsConfig;
use crate::publisher::NatsPublisher;
use crate::subscriber::NatsSubscriber;
use crate::BACKEND;

/// A connection to a NATS server with JetStream, and the factory of publishers and
/// subscribers on it ([`Broker`]). Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct NatsBroker {
    client: Arc<Client>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("config", &self.client.config)
            .field("capabilities", &self.client.capabilities)
            .finish()
    }
}

impl NatsBroker {
    /// Connects, checks that JetStream is available, and reads the server's limits. Fails
    /// within about `connect_timeout + request_timeout` with a typed error: unreachable server
    /// ([`Error::Connection`]), bad credentials or missing permissions
    /// ([`Error::Unauthorized`]), JetStream disabled ([`Error::Unsupported`]).
    pub async fn connect(config: NatsConfig) -> Result<NatsBroker, Error> {
        Ok(NatsBroker {
            client: Client::connect(config).await?,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &NatsConfig {
        &self.client.config
    }

    /// The server version string (`2.9.10`).
    pub fn server_version(&self) -> String {
        self.client.nats.server_info().version
    }

    /// Whether consumers use several filter subjects (server >= 2.10) rather than one wider
    /// filter plus client-side matching.
    pub fn multi_filter(&self) -> bool {
        self.client.multi_filter
    }

    /// Creates the stream now if it is missing (publishers and subscribers also do this on
    /// first use).
    pub async fn ensure_stream(&self) -> Result<(), Error> {
        self.client.ensure_stream().await
    }

    /// The underlying JetStream context, for what the ports do not cover.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.client.js
    }
}

#[async_trait]
impl Broker for NatsBroker {
    fn schemes() -> &'static [&'static str] {
        &["nats", "tls"]
    }

    /// [`NatsBroker::connect`] with [`NatsConfig::from_url`].
    async fn connect_url(url: &str) -> Result<Self, Error> {
        Self::connect(NatsConfig::from_url(url)?).await
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// A publisher on this connection.
    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(NatsPublisher::new(self.client.clone()))
    }

    /// A subscriber on this connection; each `subscribe` opens a pull consumer.
    fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(NatsSubscriber::new(self.client.clone()))
    }

    /// What this adapter can do on this server.
    fn capabilities(&self) -> Capabilities {
        self.client.capabilities.clone()
    }

    /// Connected, with the stream in place and capturing longshore's subjects (it is created
    /// if missing, as the first publish or subscribe would); not ready after close.
    async fn health(&self) -> Health {
        crate::health::report(&self.client, None).await
    }

    /// Refuses further work on every handle, flushes, and drains the connection: open
    /// delivery streams end; deliveries left unsettled come back after `ack_wait`.
    async fn close(&self) -> Result<(), Error> {
        self.client.close().await;
        Ok(())
    }
}
