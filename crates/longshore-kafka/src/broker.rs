//! The Kafka broker handle: connects, hands out publishers and subscribers through
//! [`longshore_core::Broker`], and creates topics on request.

use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::{Broker, Capabilities, Error, Health, Publisher, Subscriber};
use rdkafka::admin::AdminClient;

use crate::client::{Client, LogContext};
use crate::config::KafkaConfig;
use crate::error::map;
use crate::publisher::KafkaPublisher;
use crate::subscriber::KafkaSubscriber;
use crate::BACKEND;

/// A connection to a Kafka cluster (URL scheme `kafka`). Clone it freely; the publishers and
/// subscribers it hands out ([`Broker::publisher`], [`Broker::subscriber`]) make their own
/// librdkafka clients.
#[derive(Clone)]
pub struct KafkaBroker {
    client: Arc<Client>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("config", &self.client.config)
            .finish()
    }
}

impl KafkaBroker {
    /// Connects: creates an admin client and reads the cluster metadata once, so an
    /// unreachable cluster is an [`Error::Connection`] here rather than later.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaBroker, Error> {
        if config.partitions < 1 {
            return Err(Error::Config("partitions must be at least 1".into()));
        }
        let mut cc = config.client_config();
        config.apply_properties(&mut cc);
        let admin: AdminClient<LogContext> = cc
            .create_with_context(LogContext)
            .map_err(|e| map("create admin client", e))?;
        let client = Arc::new(Client::new(config, admin));
        let url = client.config.url.redacted();
        client.list_topics().await.map_err(|e| match e {
            Error::Unauthorized { .. } => e,
            other => Error::Connection {
                backend: BACKEND,
                message: format!("cannot reach {url}: {other}"),
                source: Some(Box::new(other)),
            },
        })?;
        Ok(KafkaBroker { client })
    }

    /// The configuration in use.
    pub fn config(&self) -> &KafkaConfig {
        &self.client.config
    }

    /// Creates the Kafka topics of these longshore topics if they are missing.
    pub async fn ensure_topics(&self, topics: &[&str]) -> Result<(), Error> {
        let kafka: Vec<String> = topics
            .iter()
            .map(|t| self.client.config.topic_map.kafka_topic(t))
            .collect::<Result<_, _>>()?;
        self.client.ensure_topics(&kafka).await
    }

    /// How many times a fatal error (possible with idempotence) made a publisher of this
    /// broker drop its producer for a new one.
    pub fn producers_replaced(&self) -> u64 {
        self.client.producers_replaced()
    }
}

#[async_trait]
impl Broker for KafkaBroker {
    fn schemes() -> &'static [&'static str] {
        &["kafka"]
    }

    /// Connects to `kafka://host:port[,host:port][?options]` (see [`KafkaConfig::from_url`]).
    async fn connect_url(url: &str) -> Result<Self, Error> {
        Self::connect(KafkaConfig::from_url(url)?).await
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// A publisher with its own producer (created on first use).
    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(KafkaPublisher::new(self.client.clone()))
    }

    /// A subscriber; each `subscribe` starts a consumer (one group member) of its own.
    fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(KafkaSubscriber::new(self.client.clone()))
    }

    fn capabilities(&self) -> Capabilities {
        self.client.capabilities()
    }

    /// Whether the cluster answers a metadata request (with a short timeout) and the topics
    /// created through this broker's handles are still there; not ready after
    /// [`Broker::close`]. See [`Health`].
    async fn health(&self) -> Health {
        crate::health::check(&self.client, None).await
    }

    /// Marks the connection closed: its publishers refuse to publish, its subscribers refuse
    /// new subscriptions and lag queries, and all of them report not ready. Close publishers
    /// and subscribers themselves to flush producers and leave consumer groups.
    async fn close(&self) -> Result<(), Error> {
        self.client.close();
        Ok(())
    }
}
