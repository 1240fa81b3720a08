//! [`PgUnitOfWork`]: a service's own writes, appended events and their outbox rows in one
//! transaction.

use longshore_core::{AppendResult, Event, ExpectedVersion, StoreError};
use sqlx::{PgConnection, Postgres};

use crate::error::PgError;
use crate::store::PgStore;

/// A transaction in which a service's own writes, appended events and their outbox rows
/// commit together. Dropping it without [`PgUnitOfWork::commit`] rolls everything back.
pub struct PgUnitOfWork {
    store: PgStore,
    tx: sqlx::Transaction<'static, Postgres>,
}

impl std::fmt::Debug for PgUnitOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUnitOfWork")
            .field("store", &self.store)
            .finish()
    }
}

impl PgStore {
    /// Starts a unit of work: a transaction in which the service's own writes, appended
    /// events and their outbox rows commit together (or not at all).
    ///
    /// ```no_run
    /// # async fn demo(store: longshore_postgres::PgStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use longshore_core::{Event, ExpectedVersion};
    /// let mut uow = store.begin().await?;
    /// sqlx::query("UPDATE orders SET status = 'paid' WHERE id = $1")
    ///     .bind(42_i64)
    ///     .execute(uow.connection())
    ///     .await?;
    /// uow.append("order-42", ExpectedVersion::Exact(3), vec![Event::new("order_paid", serde_json::json!({"id": 42}))])
    ///     .await?;
    /// uow.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn begin(&self) -> Result<PgUnitOfWork, StoreError> {
        let tx = self.state.pool.begin().await.map_err(PgError::from)?;
        Ok(PgUnitOfWork {
            store: self.clone(),
            tx,
        })
    }
}

impl PgUnitOfWork {
    /// Appends events in this transaction (see [`longshore_core::EventStore::append`]).
    /// Nothing is visible to readers, and no outbox row can be relayed, before
    /// [`PgUnitOfWork::commit`].
    pub async fn append(
        &mut self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        let store = self.store.clone();
        store
            .append_on(&mut self.tx, true, stream_id, expected, &events)
            .await
    }

    /// The transaction's connection, for the service's own queries
    /// (`sqlx::query(..).execute(uow.connection())`).
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// The underlying sqlx transaction.
    pub fn transaction(&mut self) -> &mut sqlx::Transaction<'static, Postgres> {
        &mut self.tx
    }

    /// Marks `message_id` processed by `consumer` in this transaction; false if it already
    /// was (then the caller should skip its work and roll back or commit nothing new).
    pub async fn process_once(
        &mut self,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let inbox = self.store.inbox();
        inbox.process_once(&mut self.tx, consumer, message_id).await
    }

    /// Commits the service's writes, the events and the outbox rows atomically.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(|e| PgError::from(e).into())
    }

    /// Rolls everything back.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx
            .rollback()
            .await
            .map_err(|e| PgError::from(e).into())
    }
}
