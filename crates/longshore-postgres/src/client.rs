//! [`Client`]: the one pool a URL opens, shared by the broker, its publishers, subscribers
//! and ackers, and by the event store, outbox and inbox the broker hands out; and the
//! backend's capabilities.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longshore_core::{Capabilities, Error, Outstanding};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::config::PgConfig;
use crate::error::PgError;
use crate::hub::Hub;
use crate::migrate::migrate;
use crate::queue_sql::QueueSql;
use crate::BACKEND;

/// The connection state every handle made from one [`crate::PgBroker`] shares.
pub(crate) struct Client {
    /// The pool: the only connections of this URL, apart from the LISTEN connections.
    pub(crate) pool: PgPool,
    pub(crate) config: PgConfig,
    /// The queue's statements for the configured schema.
    pub(crate) sql: QueueSql,
    /// Wakes this process's consumers on the queue's NOTIFY channel.
    pub(crate) hub: Arc<Hub>,
    /// The queue's NOTIFY channel.
    pub(crate) channel: String,
    /// Set by the broker's `close`: every handle refuses work afterwards.
    closed: AtomicBool,
    /// Work handed to tasks that closing waits for: queued acks' deletes, deliveries dropped
    /// unsettled being given back, fetches of dropped streams (see `acker.rs`).
    pub(crate) outstanding: Arc<Outstanding>,
}

/// How long closing waits for outstanding work (queued acks, give-backs) before closing the
/// pool anyway.
const FINISH_LIMIT: Duration = Duration::from_secs(5);

impl Drop for Client {
    fn drop(&mut self) {
        self.hub.stop();
    }
}

/// Opens a pool for `config`, failing fast when the server is unreachable.
pub(crate) async fn connect_pool(config: &PgConfig) -> Result<PgPool, Error> {
    let options = config.connect_options()?;
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.connect_timeout)
        .connect_with(options)
        .await
        .map_err(|e| PgError::from(e).into())
}

impl Client {
    /// Opens the pool and applies the migrations unless [`PgConfig::migrate`] is off.
    pub(crate) async fn connect(config: PgConfig) -> Result<Self, Error> {
        let pool = connect_pool(&config).await?;
        Self::on_pool(pool, config).await
    }

    /// The client of an existing pool; migrates unless [`PgConfig::migrate`] is off.
    pub(crate) async fn on_pool(pool: PgPool, config: PgConfig) -> Result<Self, Error> {
        if config.migrate {
            migrate(&pool, &config.schema).await?;
        }
        let hub = Hub::new(config.connect_options()?, config.schema.queue_channel());
        Ok(Client {
            sql: QueueSql::new(&config),
            channel: config.schema.queue_channel(),
            pool,
            config,
            hub,
            closed: AtomicBool::new(false),
            outstanding: Arc::default(),
        })
    }

    /// What this backend can do.
    pub(crate) fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::new(BACKEND, self.config.max_payload);
        caps.native_delay = true;
        caps.native_schedule = true;
        caps.cancel_schedule = true;
        caps.delivery_count = true;
        caps.ordered_by_key = true;
        caps
    }

    /// Whether the broker was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Refuses work from now on, wakes every waiting consumer (their streams end), lets
    /// outstanding work finish and closes the pool, waiting for queries in flight.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.hub.stop();
        self.hub.wake_everyone();
        finish_outstanding(&self.outstanding).await;
        self.pool.close().await;
    }
}

/// Waits (up to [`FINISH_LIMIT`]) until queued acks are written and dropped deliveries
/// given back: what closing the broker or a subscriber does, so a process that exits
/// right after neither gets its last messages again nor leaves some leased.
pub(crate) async fn finish_outstanding(work: &Outstanding) {
    if !work.finished(FINISH_LIMIT).await {
        tracing::warn!(
            left = work.count(),
            "closing with acks or give-backs not written; those messages come back when their lease expires"
        );
    }
}
