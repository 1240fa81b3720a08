//! The in-memory backend held to the whole conformance suite: transport, runtime,
//! observability and connection scenarios through `MemoryBroker`, and the store scenarios
//! through the stores a `MemoryBroker` hands out.

use std::sync::Arc;

use longshore_core::memory::MemoryBroker;
use longshore_core::{async_trait, Broker, EventStore, Inbox, Outbox, Stores};
use longshore_testkit::StoreFactory;

longshore_testkit::conformance!(MemoryBroker, "memory://", skip: [
    scheduled_message_survives_its_publisher =>
        "memory:// lives in one process: a second connection is a new, empty broker",
    delayed_retry_survives_a_consumer_restart =>
        "memory:// lives in one process: a second connection is a new, empty broker",
    acks_before_close_are_kept =>
        "memory:// lives in one process: a second connection is a new, empty broker",
    unsettled_at_close_come_back_at_once =>
        "memory:// lives in one process: a second connection is a new, empty broker",
    buffered_at_close_come_back_at_once =>
        "memory:// lives in one process: a second connection is a new, empty broker",
]);

/// Each call makes a new broker, so every store starts empty.
struct Memory;

fn stores() -> Stores {
    MemoryBroker::default()
        .stores()
        .expect("the memory broker has stores")
}

#[async_trait]
impl StoreFactory for Memory {
    async fn store(&self) -> Arc<dyn EventStore> {
        stores().store
    }
    async fn store_with_outbox(&self) -> Option<(Arc<dyn EventStore>, Arc<dyn Outbox>)> {
        let Stores { store, outbox, .. } = stores();
        Some((store, outbox))
    }
    async fn inbox(&self) -> Option<Arc<dyn Inbox>> {
        Some(stores().inbox)
    }
}

async fn store() -> Option<Memory> {
    Some(Memory)
}

longshore_testkit::store_conformance!(store);
