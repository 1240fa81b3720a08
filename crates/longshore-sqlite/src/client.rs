//! [`Client`]: the pools one file opens, shared by the broker, its publishers, subscribers and
//! ackers, and by the event store, outbox and inbox the broker hands out; and the backend's
//! capabilities.
//!
//! Writes go through one connection per process (the `writer` pool of one), in `BEGIN
//! IMMEDIATE` transactions: SQLite allows one writer at a time, so queueing in-process writers
//! on a pool is fairer and faster than letting them spin on the file lock; other processes
//! wait on the lock for up to `busy_timeout`. Reads use a pool of their own (WAL mode: readers
//! never block the writer, nor it them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use longshore_core::{Capabilities, Error, Outstanding};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::config::{SqliteConfig, Synchronous};
use crate::error::SqliteError;
use crate::migrate::{migrate, version, SCHEMA_VERSION};
use crate::wake::Wake;
use crate::BACKEND;

/// Unix time in milliseconds: the queue's and outbox's clock (one machine, so every process
/// on the file shares it).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration in milliseconds, for adding to [`now_ms`].
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The pools of one file.
pub(crate) struct Pools {
    /// One connection: every write of this process.
    pub(crate) writer: SqlitePool,
    /// Reads.
    pub(crate) reader: SqlitePool,
    pub(crate) config: SqliteConfig,
    /// Wakes this process's consumers and readers of the file.
    pub(crate) wake: Arc<Wake>,
}

fn options(config: &SqliteConfig) -> SqliteConnectOptions {
    let synchronous = match config.synchronous {
        Synchronous::Normal => SqliteSynchronous::Normal,
        Synchronous::Full => SqliteSynchronous::Full,
    };
    SqliteConnectOptions::new()
        .filename(&config.path)
        .create_if_missing(!config.read_only)
        .read_only(config.read_only)
        .busy_timeout(config.busy_timeout)
        .synchronous(synchronous)
        .foreign_keys(false)
}

impl Pools {
    /// Opens (creating the file unless read-only), switches to WAL, and creates or upgrades
    /// the schema unless [`SqliteConfig::migrate`] is off; refuses a newer schema.
    pub(crate) async fn open(config: SqliteConfig) -> Result<Self, Error> {
        let at = |e| Error::from(SqliteError::at(&config.path, e));
        let mut writer_options = options(&config);
        if !config.read_only {
            writer_options = writer_options.journal_mode(SqliteJournalMode::Wal);
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            // Waiting for this process's writer is waiting for the lock, bounded the same.
            .acquire_timeout(config.busy_timeout.max(Duration::from_millis(100)))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await
            .map_err(at)?;
        let checked = async {
            if config.migrate && !config.read_only {
                migrate(&writer).await
            } else {
                check_version(&writer).await
            }
        };
        if let Err(e) = checked.await {
            writer.close().await;
            return Err(match e {
                SqliteError::Sqlx(e) => at(e),
                SqliteError::ReadOnly { message, .. } => SqliteError::ReadOnly {
                    path: config.path.clone(),
                    message,
                }
                .into(),
                other => other.into(),
            });
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options(&config))
            .await
            .map_err(at)?;
        Ok(Pools {
            wake: Wake::of(&config.path),
            writer,
            reader,
            config,
        })
    }
}

/// Without migrating: refuses a newer schema, and a missing or older one that this handle may
/// not upgrade.
async fn check_version(writer: &SqlitePool) -> Result<(), SqliteError> {
    let mut conn = writer.acquire().await?;
    let found = version(&mut conn).await?;
    if found > SCHEMA_VERSION {
        return Err(SqliteError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < SCHEMA_VERSION {
        return Err(SqliteError::ReadOnly {
            path: Default::default(),
            message: format!(
                "longshore's tables are at version {found}, this build needs {SCHEMA_VERSION}, \
                 and this handle may not create them (read-only, or migrate=false)"
            ),
        });
    }
    Ok(())
}

/// The connection state every handle made from one [`crate::SqliteBroker`] shares.
pub(crate) struct Client {
    pub(crate) pools: Arc<Pools>,
    /// Set by the broker's `close`: every handle refuses work afterwards.
    closed: AtomicBool,
    /// Work handed to tasks that closing waits for: deliveries dropped unsettled being given
    /// back, fetches of dropped streams (see `acker.rs`).
    pub(crate) outstanding: Arc<Outstanding>,
}

/// How long closing waits for outstanding work (give-backs) before closing the pools anyway.
const FINISH_LIMIT: Duration = Duration::from_secs(5);

impl Client {
    pub(crate) fn new(pools: Arc<Pools>) -> Self {
        Client {
            pools,
            closed: AtomicBool::new(false),
            outstanding: Arc::default(),
        }
    }

    pub(crate) fn config(&self) -> &SqliteConfig {
        &self.pools.config
    }

    /// What this backend can do.
    pub(crate) fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::new(BACKEND, self.config().max_payload);
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
    /// outstanding work finish and closes the pools, waiting for queries in flight.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.pools.wake.everyone();
        finish_outstanding(&self.outstanding).await;
        self.pools.writer.close().await;
        self.pools.reader.close().await;
    }
}

/// Waits (up to [`FINISH_LIMIT`]) until deliveries dropped unsettled are given back: what
/// closing the broker or a subscriber does, so a process that exits right after leaves
/// no message leased until its lease runs out.
pub(crate) async fn finish_outstanding(work: &Outstanding) {
    if !work.finished(FINISH_LIMIT).await {
        tracing::warn!(
            left = work.count(),
            "closing with give-backs not written; those messages come back when their lease expires"
        );
    }
}
