//! [`PgBroker`]: Postgres as a message broker, and the event store, outbox and inbox on the
//! same pool.

use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::{Broker, Capabilities, Error, Health, Publisher, Stores, Subscriber};
use sqlx::postgres::PgPool;

use crate::client::Client;
use crate::config::PgConfig;
use crate::publisher::PgPublisher;
use crate::store::PgStore;
use crate::subscriber::PgSubscriber;
use crate::BACKEND;

/// Postgres as a message broker. Cheap to clone; all clones, their publishers and
/// subscribers, and the store it hands out share one pool.
///
/// Publishing inserts one row per matching subscription (`Ok` means committed); consumers
/// lease rows with `FOR UPDATE SKIP LOCKED`, so competing consumers never receive the same
/// row; a lease is renewed while the consumer holds the delivery and expires if the process
/// dies (the visibility timeout). `nack` with a delay sets the row's `available_at`; dead
/// letters move to the subscription `dlq.<name>` in the statement that removes the original.
#[derive(Clone)]
pub struct PgBroker {
    client: Arc<Client>,
    store: PgStore,
}

impl std::fmt::Debug for PgBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgBroker")
            .field("schema", &self.client.config.schema.name())
            .field("url", &self.client.config.url)
            .finish()
    }
}

impl PgBroker {
    /// Connects (failing fast if the server is unreachable) and applies the migrations unless
    /// [`PgConfig::migrate`] is off.
    pub async fn connect(config: PgConfig) -> Result<Self, Error> {
        Self::with_client(Client::connect(config).await?)
    }

    /// A broker on an existing pool (shared with the service's own queries); migrates unless
    /// [`PgConfig::migrate`] is off.
    pub async fn from_pool(pool: PgPool, config: PgConfig) -> Result<Self, Error> {
        Self::with_client(Client::on_pool(pool, config).await?)
    }

    fn with_client(client: Client) -> Result<Self, Error> {
        let store = PgStore::on_pool(client.pool.clone(), client.config.clone())?;
        Ok(PgBroker {
            client: Arc::new(client),
            store,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.client.config
    }

    /// The event store in the same schema, on the broker's pool; also the outbox its appends
    /// fill (when [`PgConfig::outbox`] is on). [`Broker::stores`] hands out the same store.
    pub fn store(&self) -> PgStore {
        self.store.clone()
    }

    /// The pool, for the service's own queries.
    pub fn pool(&self) -> &PgPool {
        &self.client.pool
    }
}

#[async_trait]
impl Broker for PgBroker {
    fn schemes() -> &'static [&'static str] {
        &["postgres", "postgresql"]
    }

    /// Parses the URL ([`PgConfig::from_url`]) and connects.
    async fn connect_url(url: &str) -> Result<Self, Error> {
        Self::connect(PgConfig::from_url(url)?).await
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(PgPublisher::new(self.client.clone()))
    }

    fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(PgSubscriber::new(self.client.clone()))
    }

    fn capabilities(&self) -> Capabilities {
        self.client.capabilities()
    }

    /// Whether the server answers (within a short timeout) and the schema is migrated; not
    /// ready after [`Broker::close`].
    async fn health(&self) -> Health {
        let closed = self.client.is_closed().then_some("postgres broker");
        crate::health::check(&self.client.pool, &self.client.config, closed).await
    }

    /// Ends every stream, refuses further work on every handle and closes the pool (the
    /// store handed out shares it, so it closes too).
    async fn close(&self) -> Result<(), Error> {
        self.client.close().await;
        Ok(())
    }

    fn stores(&self) -> Option<Stores> {
        Some(Stores {
            store: Arc::new(self.store.clone()),
            outbox: Arc::new(self.store.clone()),
            inbox: Arc::new(self.store.inbox()),
        })
    }
}
