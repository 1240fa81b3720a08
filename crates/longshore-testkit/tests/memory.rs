//! The in-memory adapter held to the whole conformance suite.

use std::sync::Arc;

use longshore_core::async_trait;
use longshore_core::memory::{MemoryBroker, MemoryInbox, MemoryStore};
use longshore_core::{EventStore, Inbox, Outbox, Publisher, Subscriber};
use longshore_testkit::{BrokerFactory, StoreFactory};

struct Memory(MemoryBroker);

#[async_trait]
impl BrokerFactory for Memory {
    async fn publisher(&self) -> Arc<dyn Publisher> {
        Arc::new(self.0.publisher())
    }
    async fn subscriber(&self) -> Arc<dyn Subscriber> {
        Arc::new(self.0.subscriber())
    }
}

async fn broker() -> Option<Memory> {
    Some(Memory(MemoryBroker::default()))
}

struct Store;

#[async_trait]
impl StoreFactory for Store {
    async fn store(&self) -> Arc<dyn EventStore> {
        Arc::new(MemoryStore::with_outbox())
    }
    async fn store_with_outbox(&self) -> Option<(Arc<dyn EventStore>, Arc<dyn Outbox>)> {
        let store = MemoryStore::with_outbox();
        Some((Arc::new(store.clone()), Arc::new(store)))
    }
    async fn inbox(&self) -> Option<Arc<dyn Inbox>> {
        Some(Arc::new(MemoryInbox::new(1000)))
    }
}

async fn store() -> Option<Store> {
    Some(Store)
}

longshore_testkit::broker_conformance!(broker);
longshore_testkit::runtime_conformance!(broker);
longshore_testkit::store_conformance!(store);
