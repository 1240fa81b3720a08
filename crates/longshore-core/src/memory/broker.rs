//! The memory broker handle: the factory of publishers and subscribers on one in-process
//! broker, with the event store `memory://` hands out beside it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::client::{capabilities, Client};
use super::config::MemoryConfig;
use super::inbox::MemoryInbox;
use super::publisher::MemoryPublisher;
use super::queue::lock;
use super::store::MemoryStore;
use super::subscriber::MemorySubscriber;
use super::BACKEND;
use crate::broker::{Broker, Stores};
use crate::capabilities::Capabilities;
use crate::error::Error;
use crate::health::Health;
use crate::publisher::Publisher;
use crate::subscriber::Subscriber;

/// An in-process broker. Clone it, or take publisher and subscriber handles from it
/// ([`Broker`]); all clones share the same subscriptions.
#[derive(Clone)]
pub struct MemoryBroker {
    client: Arc<Client>,
    /// The event store, outbox and inbox `memory://` hands out beside the broker.
    stores: Stores,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("config", &self.client.config)
            .finish()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new(MemoryConfig::default())
    }
}

impl MemoryBroker {
    /// A broker with the given limits.
    pub fn new(config: MemoryConfig) -> Self {
        let store = MemoryStore::with_outbox();
        MemoryBroker {
            client: Arc::new(Client {
                routes: Mutex::new(HashMap::new()),
                config,
                queues: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                timers: Default::default(),
            }),
            stores: Stores {
                store: Arc::new(store.clone()),
                outbox: Arc::new(store),
                inbox: Arc::new(MemoryInbox::default()),
            },
        }
    }

    /// Messages ready or unacknowledged in a subscription (0 if it does not exist).
    pub fn depth(&self, subscription: &str) -> usize {
        lock(&self.client.queues)
            .get(subscription)
            .map_or(0, |q| lock(&q.state).depth())
    }

    /// How many messages a subscription's buffer can hold before it grows again.
    #[cfg(test)]
    pub(super) fn buffer_capacity(&self, subscription: &str) -> usize {
        lock(&self.client.queues)
            .get(subscription)
            .map_or(0, |q| lock(&q.state).ready.capacity())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn schemes() -> &'static [&'static str] {
        &["memory"]
    }

    /// `memory://`: a new, empty broker with default limits and its own store.
    async fn connect_url(url: &str) -> Result<Self, Error> {
        match url.split_once("://") {
            Some((scheme, "")) if scheme.eq_ignore_ascii_case("memory") => Ok(Self::default()),
            _ => Err(Error::Config(format!(
                "{}: a memory URL is exactly memory://",
                crate::url::redact_url(url)
            ))),
        }
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(MemoryPublisher::new(self.client.clone()))
    }

    fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(MemorySubscriber::new(self.client.clone()))
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.client.config)
    }

    async fn health(&self) -> Health {
        if self.client.closed.load(Ordering::Acquire) {
            Health::down(BACKEND, "memory broker is closed")
        } else {
            Health::up(BACKEND)
        }
    }

    async fn close(&self) -> Result<(), Error> {
        self.client.closed.store(true, Ordering::Release);
        self.client.timers.abort_all();
        Ok(())
    }

    fn stores(&self) -> Option<Stores> {
        Some(self.stores.clone())
    }
}
