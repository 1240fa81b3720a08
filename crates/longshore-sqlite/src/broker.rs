//! [`SqliteBroker`]: an SQLite file as a message broker, and the event store, outbox and
//! inbox in the same file, on the same pools.

use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::{Broker, Capabilities, Error, Health, Publisher, Stores, Subscriber};

use crate::client::{Client, Pools};
use crate::config::SqliteConfig;
use crate::publisher::SqlitePublisher;
use crate::store::SqliteStore;
use crate::subscriber::SqliteSubscriber;
use crate::BACKEND;

/// An SQLite file as a message broker. Cheap to clone; all clones, their publishers and
/// subscribers, and the store it hands out share one writer connection and one read pool.
///
/// Publishing inserts one row per matching subscription (`Ok` means committed); a consumer
/// leases rows for the visibility timeout, renewed while it holds them, so competing
/// consumers (in this process or others on the same file) never receive the same row and a
/// dead process's rows come back. `nack` with a delay sets the row's `available_at`; dead
/// letters move to the subscription `dlq.<name>` in the transaction that removes the original.
#[derive(Clone)]
pub struct SqliteBroker {
    client: Arc<Client>,
    store: SqliteStore,
}

impl std::fmt::Debug for SqliteBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBroker")
            .field("path", &self.client.config().path)
            .finish()
    }
}

impl SqliteBroker {
    /// Opens the file (creating it unless read-only), switches it to WAL, and creates or
    /// upgrades longshore's tables unless [`SqliteConfig::migrate`] is off. A file that cannot
    /// be created, is not a database, is read-only, stays locked past the busy timeout or has
    /// a newer schema is a typed error ([`crate::SqliteError::of`] finds it).
    pub async fn connect(config: SqliteConfig) -> Result<Self, Error> {
        let pools = Arc::new(Pools::open(config).await?);
        Ok(SqliteBroker {
            store: SqliteStore::on_pools(pools.clone()),
            client: Arc::new(Client::new(pools)),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SqliteConfig {
        self.client.config()
    }

    /// The event store in the same file; also the outbox its appends fill (when
    /// [`SqliteConfig::outbox`] is on). [`Broker::stores`] hands out the same store.
    pub fn store(&self) -> SqliteStore {
        self.store.clone()
    }
}

#[async_trait]
impl Broker for SqliteBroker {
    fn schemes() -> &'static [&'static str] {
        &["sqlite"]
    }

    /// Parses the URL ([`SqliteConfig::from_url`]) and opens the file.
    async fn connect_url(url: &str) -> Result<Self, Error> {
        Self::connect(SqliteConfig::from_url(url)?).await
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(SqlitePublisher::new(self.client.clone()))
    }

    fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(SqliteSubscriber::new(self.client.clone()))
    }

    fn capabilities(&self) -> Capabilities {
        self.client.capabilities()
    }

    /// Whether the file answers a read (within a short timeout) and holds this build's
    /// schema; not ready after [`Broker::close`].
    async fn health(&self) -> Health {
        let closed = self.client.is_closed().then_some("sqlite broker");
        crate::health::check(&self.client.pools, closed).await
    }

    /// Ends every stream, refuses further work on every handle and closes the pools (the
    /// store handed out shares them, so it closes too).
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
