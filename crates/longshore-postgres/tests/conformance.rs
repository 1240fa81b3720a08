//! The whole conformance suite against the PostgreSQL server at `DATABASE_URL`: every test gets
//! its own schema (the broker's through `?schema=` in its URL).

mod common;

use std::sync::Arc;

use longshore_core::async_trait;
use longshore_core::{EventStore, Inbox, Outbox};
use longshore_testkit::StoreFactory;

longshore_testkit::conformance!(
    longshore_postgres::PgBroker,
    common::fresh_schema_url(),
    raw: common::raw::raw
);

/// Holds the watermark lock shared for the whole test (see `common::watermark_shared`).
struct Store(#[allow(dead_code)] common::WatermarkGuard);

#[async_trait]
impl StoreFactory for Store {
    async fn store(&self) -> Arc<dyn EventStore> {
        Arc::new(common::store_with(false).await)
    }
    async fn store_with_outbox(&self) -> Option<(Arc<dyn EventStore>, Arc<dyn Outbox>)> {
        let store = common::store_with(true).await;
        Some((Arc::new(store.clone()), Arc::new(store)))
    }
    async fn inbox(&self) -> Option<Arc<dyn Inbox>> {
        Some(Arc::new(common::store_with(false).await.inbox()))
    }
}

async fn store() -> Option<Store> {
    if !common::reachable().await {
        return None;
    }
    Some(Store(common::watermark_shared().await))
}

longshore_testkit::store_conformance!(store);
