//! [`Client`]: the one pool a URL opens, shared by the broker, its publishers, subscribers
//! and ackers, and by the event store, outbox and inbox the broker hands out; and the
//! backend's capabilities.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longshore_core::{Capabilities, Error};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::Notify;

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
    /// Acks whose delete is queued and not yet written (see `acker.rs`).
    pub(crate) pending_acks: PendingAcks,
}

/// How long the broker's `close` waits for queued acks before closing the pool.
const ACK_FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// Acks whose delete is queued and not yet written: `close` waits for them, so a service that
/// stops right after its consumers does not get its last messages again.
#[derive(Default)]
pub(crate) struct PendingAcks {
    count: AtomicUsize,
    idle: Notify,
}

impl PendingAcks {
    pub(crate) fn begin(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn end(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Resolves once no ack is queued.
    async fn idle(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

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
            pending_acks: PendingAcks::default(),
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
    /// queued acks be written and closes the pool, waiting for queries in flight.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.hub.stop();
        self.hub.wake_everyone();
        self.write_queued_acks().await;
        self.pool.close().await;
    }

    /// Waits (up to [`ACK_FLUSH_LIMIT`]) until every queued ack is written: what closing the
    /// broker or a subscriber does, so a process that exits right after does not get its last
    /// messages again.
    pub(crate) async fn write_queued_acks(&self) {
        if tokio::time::timeout(ACK_FLUSH_LIMIT, self.pending_acks.idle())
            .await
            .is_err()
        {
            tracing::warn!("closing with acks not yet written; those messages come back when their lease expires");
        }
    }
}
