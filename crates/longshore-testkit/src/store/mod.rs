//! The event-store behaviours, one module per group; each scenario takes a [`StoreFactory`]
//! and makes its own isolated store.

use std::sync::Arc;

use longshore_core::{async_trait, Event, EventStore, Inbox, Outbox};

pub mod aggregate;
pub mod append;
pub mod catch_up;
pub mod observability;
pub mod outbox;
pub mod read;
pub mod relay;

/// Makes isolated event stores (their own schema or database per call).
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// A new, empty store.
    async fn store(&self) -> Arc<dyn EventStore>;
    /// A new, empty store whose appends fill an outbox, and that outbox, when the adapter
    /// has one.
    async fn store_with_outbox(&self) -> Option<(Arc<dyn EventStore>, Arc<dyn Outbox>)> {
        None
    }
    /// An inbox, when the adapter has one.
    async fn inbox(&self) -> Option<Arc<dyn Inbox>> {
        None
    }
}

/// Event `n` of a test stream: an `order_created` carrying `n` in its data and a header.
pub(crate) fn ev(n: u64) -> Event {
    Event::new("order_created", serde_json::json!({ "n": n })).with_header("n", n.to_string())
}
