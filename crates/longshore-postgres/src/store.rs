//! [`PgStore`]: the event store and the outbox its appends fill. Appending is in
//! `append.rs`, reading and catch-up in `read.rs`, relaying in `outbox.rs`, the unit of
//! work in `unit_of_work.rs`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use longshore_core::topic::validate_name;
use longshore_core::{
    AppendResult, Error, Event, EventStore, ExpectedVersion, RecordedEvent, StoreError,
};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Postgres};
use tracing::Instrument;

use crate::client::connect_pool;
use crate::config::PgConfig;
use crate::error::{retry_lost, PgError};
use crate::hub::Hub;
use crate::inbox::PgInbox;
use crate::migrate::migrate;
use crate::store_sql::StoreSql;

/// Most events one transaction may append: positions keep 16 bits for the index of an event
/// within its transaction.
pub const MAX_EVENTS_PER_TRANSACTION: usize = 65_535;

/// What every clone of one store shares.
pub(crate) struct StoreState {
    pub(crate) pool: PgPool,
    pub(crate) config: PgConfig,
    pub(crate) sql: StoreSql,
    /// Wakes catch-up readers on the events' NOTIFY channel.
    pub(crate) hub: Arc<Hub>,
    /// The events' NOTIFY channel.
    pub(crate) channel: String,
    /// The advisory lock name that serializes outbox claims of this schema.
    pub(crate) claim_lock: String,
}

impl Drop for StoreState {
    fn drop(&mut self) {
        self.hub.stop();
    }
}

/// The PostgreSQL event store; also the [`longshore_core::Outbox`] its appends fill (when
/// [`PgConfig::outbox`] is on). Cheap to clone.
///
/// A broker's store comes from [`crate::PgBroker::store`] (or `Broker::stores`), on the
/// broker's pool; [`PgStore::connect`] is for programs that use the store alone.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) state: Arc<StoreState>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.state.config.schema.name())
            .field("outbox", &self.state.config.outbox)
            .field("url", &self.state.config.url)
            .finish()
    }
}

impl PgStore {
    /// Opens a pool of its own and applies the migrations unless [`PgConfig::migrate`] is
    /// off: for programs that use the store without the broker.
    pub async fn connect(config: PgConfig) -> Result<Self, Error> {
        let pool = connect_pool(&config).await?;
        Self::from_pool(pool, config).await
    }

    /// A store on an existing pool (shared with the service's own queries); migrates unless
    /// [`PgConfig::migrate`] is off.
    pub async fn from_pool(pool: PgPool, config: PgConfig) -> Result<Self, Error> {
        if config.migrate {
            migrate(&pool, &config.schema).await?;
        }
        Self::on_pool(pool, config)
    }

    /// A store on a pool whose schema is already migrated.
    pub(crate) fn on_pool(pool: PgPool, config: PgConfig) -> Result<Self, Error> {
        let hub = Hub::new(config.connect_options()?, config.schema.events_channel());
        Ok(PgStore {
            state: Arc::new(StoreState {
                sql: StoreSql::new(&config.schema, config.outbox),
                channel: config.schema.events_channel(),
                claim_lock: format!("longshore.outbox.{}", config.schema.name()),
                pool,
                config,
                hub,
            }),
        })
    }

    /// The pool, for the service's own queries.
    pub fn pool(&self) -> &PgPool {
        &self.state.pool
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.state.config
    }

    /// Checks that the server answers.
    pub async fn health(&self) -> Result<(), Error> {
        sqlx::query::<Postgres>("SELECT 1")
            .execute(&self.state.pool)
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    /// An inbox in the same schema, on the same pool.
    pub fn inbox(&self) -> PgInbox {
        PgInbox::new(self.state.pool.clone(), &self.state.config.schema)
    }

    /// Appends inside a transaction the caller already holds (for services that manage their
    /// own `sqlx::Transaction`). Same semantics as [`EventStore::append`]; a unique violation
    /// from a concurrent append of the same event id aborts the caller's transaction and is
    /// reported as [`StoreError::DuplicateEvent`].
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        self.append_on(conn, true, stream_id, expected, &events)
            .await
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

/// A position or version as the `bigint` it is stored as.
pub(crate) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A page size as a SQL `LIMIT`.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for PgStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        // One statement in autocommit mode: the version check, the events, the outbox rows
        // and the notification commit atomically, in one round trip. A retry after a
        // lost connection whose earlier try committed finds its own events: the same result.
        let span = tracing::debug_span!(
            "longshore.append",
            backend = crate::BACKEND,
            stream = stream_id,
            events = events.len()
        );
        let events = &events;
        retry_lost(
            "append",
            self.state.config.connect_timeout,
            |_| async move {
                let mut conn = self.state.pool.acquire().await.map_err(PgError::from)?;
                self.append_on(&mut conn, false, stream_id, expected, events)
                    .await
            },
        )
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
        self.read_all_settled(after, limit_n).await
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
