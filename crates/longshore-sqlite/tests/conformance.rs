//! The whole conformance suite and the store suite on SQLite: every test gets a database file
//! of its own, so nothing is shared and nothing needs a running server (never skipped).

mod common;

use std::sync::Arc;

use longshore_core::async_trait;
use longshore_core::{EventStore, Inbox, Outbox};
use longshore_sqlite::{SqliteConfig, SqliteStore};
use longshore_testkit::StoreFactory;

longshore_testkit::conformance!(
    longshore_sqlite::SqliteBroker,
    common::fresh_url(),
    raw: common::raw::raw
);

struct Store;

async fn store_with(outbox: bool) -> SqliteStore {
    SqliteStore::connect(SqliteConfig::new(common::fresh_path()).with_outbox(outbox))
        .await
        .expect("open a fresh SQLite store")
}

#[async_trait]
impl StoreFactory for Store {
    async fn store(&self) -> Arc<dyn EventStore> {
        Arc::new(store_with(false).await)
    }
    async fn store_with_outbox(&self) -> Option<(Arc<dyn EventStore>, Arc<dyn Outbox>)> {
        let store = store_with(true).await;
        Some((Arc::new(store.clone()), Arc::new(store)))
    }
    async fn inbox(&self) -> Option<Arc<dyn Inbox>> {
        Some(Arc::new(store_with(false).await.inbox()))
    }
}

async fn store() -> Option<Store> {
    Some(Store)
}

longshore_testkit::store_conformance!(store);
