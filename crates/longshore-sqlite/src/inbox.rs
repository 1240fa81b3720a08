//! The inbox: processed message ids per consumer, in the same file.

use std::sync::Arc;

use async_trait::async_trait;
use longshore_core::{Inbox, StoreError};
use sqlx::SqliteConnection;

use crate::client::{now_ms, Pools};
use crate::error::SqliteError;

const INSERT: &str = "INSERT INTO longshore_inbox (consumer, message_id, processed_at)
VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";

/// An SQLite [`Inbox`]. Inside a [`crate::SqliteUnitOfWork`], `process_once` records the id
/// in the transaction of the handler's own writes, so both commit together: a redelivered
/// message then finds its id and is skipped, and a handler that failed left no row behind.
#[derive(Clone)]
pub struct SqliteInbox {
    pools: Arc<Pools>,
}

impl std::fmt::Debug for SqliteInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteInbox").finish_non_exhaustive()
    }
}

fn check(consumer: &str, message_id: &str) -> Result<(), StoreError> {
    for (kind, v) in [("consumer", consumer), ("message id", message_id)] {
        if v.is_empty() || v.len() > 256 {
            return Err(StoreError::Invalid {
                kind,
                value: v.chars().take(64).collect(),
                reason: "must be 1 to 256 bytes",
            });
        }
    }
    Ok(())
}

impl SqliteInbox {
    pub(crate) fn new(pools: Arc<Pools>) -> Self {
        SqliteInbox { pools }
    }

    /// Records `message_id` for `consumer` on `conn` (inside the caller's transaction).
    /// Returns false when it was already recorded (a duplicate: skip the work).
    pub async fn process_once(
        &self,
        conn: &mut SqliteConnection,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        check(consumer, message_id)?;
        let r = sqlx::query(INSERT)
            .bind(consumer)
            .bind(message_id)
            .bind(now_ms())
            .execute(conn)
            .await
            .map_err(SqliteError::from)?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait]
impl Inbox for SqliteInbox {
    async fn is_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        check(consumer, message_id)?;
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM longshore_inbox WHERE consumer = ?1 AND message_id = ?2)",
        )
        .bind(consumer)
        .bind(message_id)
        .fetch_one(&self.pools.reader)
        .await
        .map_err(|e| SqliteError::from(e).into())
    }

    async fn mark_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        check(consumer, message_id)?;
        let r = sqlx::query(INSERT)
            .bind(consumer)
            .bind(message_id)
            .bind(now_ms())
            .execute(&self.pools.writer)
            .await
            .map_err(SqliteError::from)?;
        Ok(r.rows_affected() == 1)
    }
}
