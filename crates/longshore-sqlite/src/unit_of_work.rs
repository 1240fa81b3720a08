//! [`SqliteUnitOfWork`]: a service's own writes, appended events, their outbox rows and
//! inbox marks in one transaction.

use longshore_core::{AppendResult, Event, ExpectedVersion, StoreError};
use sqlx::{Sqlite, SqliteConnection};

use crate::error::SqliteError;
use crate::store::SqliteStore;

/// A write transaction in which a service's own writes, appended events and their outbox rows
/// commit together. It holds the file's write lock (and this process's one write connection)
/// until [`SqliteUnitOfWork::commit`]; keep it short. Dropping it rolls everything back.
pub struct SqliteUnitOfWork {
    store: SqliteStore,
    tx: sqlx::Transaction<'static, Sqlite>,
}

impl std::fmt::Debug for SqliteUnitOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteUnitOfWork")
            .field("store", &self.store)
            .finish()
    }
}

impl SqliteStore {
    /// Starts a unit of work (`BEGIN IMMEDIATE`: it waits for the write lock up to the busy
    /// timeout).
    pub async fn begin(&self) -> Result<SqliteUnitOfWork, StoreError> {
        let tx = self
            .pools
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(SqliteError::from)?;
        Ok(SqliteUnitOfWork {
            store: self.clone(),
            tx,
        })
    }
}

impl SqliteUnitOfWork {
    /// Appends events in this transaction (see [`longshore_core::EventStore::append`]).
    pub async fn append(
        &mut self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        let store = self.store.clone();
        store
            .append_on(&mut self.tx, stream_id, expected, &events)
            .await
    }

    /// The transaction's connection, for the service's own queries.
    pub fn connection(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// Marks `message_id` processed by `consumer` in this transaction; false if it already
    /// was (then skip the work).
    pub async fn process_once(
        &mut self,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let inbox = self.store.inbox();
        inbox.process_once(&mut self.tx, consumer, message_id).await
    }

    /// Commits the service's writes, the events and the outbox rows atomically, and wakes
    /// this process's catch-up readers.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(SqliteError::from)?;
        self.store.pools.wake.events().notify_waiters();
        Ok(())
    }

    /// Rolls everything back.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx
            .rollback()
            .await
            .map_err(|e| SqliteError::from(e).into())
    }
}
