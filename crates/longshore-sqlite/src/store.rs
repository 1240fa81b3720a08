//! [`SqliteStore`]: the event store and the outbox its appends fill. Appending is in
//! `append.rs`, reading and catch-up in `read.rs`, relaying in `outbox.rs`, the unit of work
//! in `unit_of_work.rs`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use longshore_core::topic::validate_name;
use longshore_core::{
    AppendResult, Error, Event, EventStore, ExpectedVersion, RecordedEvent, StoreError,
};
use tracing::Instrument;

use crate::client::Pools;
use crate::config::SqliteConfig;
use crate::error::SqliteError;
use crate::inbox::SqliteInbox;

/// The SQLite event store; also the [`longshore_core::Outbox`] its appends fill (when
/// [`SqliteConfig::outbox`] is on). Cheap to clone.
///
/// Positions are SQLite `AUTOINCREMENT` row ids handed out while the append holds the file's
/// only write lock, so the global order is gap-free and equal to commit order: `read_all`
/// needs no watermark, and a follower sees every event exactly once. A broker's store comes
/// from [`crate::SqliteBroker::store`] (or `Broker::stores`); [`SqliteStore::connect`] is for
/// programs that use the store alone.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) pools: Arc<Pools>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.pools.config.path)
            .field("outbox", &self.pools.config.outbox)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the file (see [`crate::SqliteBroker::connect`]) for the store alone.
    pub async fn connect(config: SqliteConfig) -> Result<Self, Error> {
        Ok(Self::on_pools(Arc::new(Pools::open(config).await?)))
    }

    pub(crate) fn on_pools(pools: Arc<Pools>) -> Self {
        SqliteStore { pools }
    }

    /// The configuration.
    pub fn config(&self) -> &SqliteConfig {
        &self.pools.config
    }

    /// The read pool, for the service's own queries.
    pub fn pool(&self) -> &sqlx::SqlitePool {
        &self.pools.reader
    }

    /// An inbox in the same file.
    pub fn inbox(&self) -> SqliteInbox {
        SqliteInbox::new(self.pools.clone())
    }

    /// Closes the pools (of the broker too, when it came from one).
    pub async fn close(&self) {
        self.pools.writer.close().await;
        self.pools.reader.close().await;
    }
}

pub(crate) fn validate_stream(stream_id: &str) -> Result<(), StoreError> {
    validate_name("stream", stream_id).map_err(|_| StoreError::Invalid {
        kind: "stream",
        value: stream_id.chars().take(64).collect(),
        reason: "must be 1 to 128 bytes of [A-Za-z0-9_.-]",
    })
}

pub(crate) fn validate_label(kind: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.len() > 256 {
        return Err(StoreError::Invalid {
            kind,
            value: value.chars().take(64).collect(),
            reason: "must be 1 to 256 bytes",
        });
    }
    Ok(())
}

/// A position or version as the INTEGER it is stored as.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A page size as a SQL `LIMIT`.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        // One IMMEDIATE transaction: the version check, the events and their outbox rows
        // commit together, under the file's write lock.
        let span = tracing::debug_span!(
            "longshore.append",
            backend = crate::BACKEND,
            stream = stream_id,
            events = events.len()
        );
        async {
            let mut tx = self
                .pools
                .writer
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(SqliteError::from)?;
            let result = self
                .append_on(&mut tx, stream_id, expected, &events)
                .await?;
            tx.commit().await.map_err(SqliteError::from)?;
            if result.written {
                self.pools.wake.events().notify_waiters();
            }
            Ok(result)
        }
        .instrument(span)
        .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from: u64,
        limit_n: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_stream_page(stream_id, from, limit_n).await
    }

    async fn read_all(&self, after: u64, limit_n: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_all_page(after, limit_n).await
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.checkpoint(name).await
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        self.store_checkpoint(name, position).await
    }

    async fn wait_for_events(&self, after: u64, timeout: Duration) {
        self.wait_for_events_after(after, timeout).await
    }
}
