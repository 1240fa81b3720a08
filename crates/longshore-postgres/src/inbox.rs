//! The inbox: processed message ids per consumer, written in the handler's own transaction.

use async_trait::async_trait;
use longshore_core::{Inbox, StoreError};
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, PgConnection, Postgres, SqlSafeStr, SqlStr};

use crate::config::Schema;
use crate::error::PgError;

/// A Postgres [`Inbox`]. Use [`PgInbox::process_once`] inside the handler's transaction so
/// that the handler's writes and the inbox row commit together: a redelivered message then
/// finds its id and is skipped, and a handler that failed left no row behind.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool, inbox: longshore_postgres::PgInbox) -> Result<(), Box<dyn std::error::Error>> {
/// let mut tx = pool.begin().await?;
/// if inbox.process_once(&mut tx, "billing", "message-1").await? {
///     sqlx::query("INSERT INTO invoices (order_id) VALUES ($1)").bind(7_i64).execute(&mut *tx).await?;
/// }
/// tx.commit().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PgInbox {
    pool: PgPool,
    insert: SqlStr,
    exists: SqlStr,
}

impl std::fmt::Debug for PgInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgInbox").finish_non_exhaustive()
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

impl PgInbox {
    /// An inbox in `schema` (migrated by [`crate::migrate`]).
    pub fn new(pool: PgPool, schema: &Schema) -> Self {
        let table = schema.table("inbox");
        PgInbox {
            pool,
            insert: AssertSqlSafe(format!(
                "INSERT INTO {table} (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            ))
            .into_sql_str(),
            exists: AssertSqlSafe(format!(
                "SELECT EXISTS (SELECT 1 FROM {table} WHERE consumer = $1 AND message_id = $2)"
            ))
            .into_sql_str(),
        }
    }

    /// Records `message_id` for `consumer` in the caller's transaction. Returns false when it
    /// was already recorded (a duplicate: skip the work). A concurrent handler of the same id
    /// waits here until the first one commits (then false) or rolls back (then true).
    pub async fn process_once(
        &self,
        conn: &mut PgConnection,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        check(consumer, message_id)?;
        let r = sqlx::query::<Postgres>(self.insert.clone())
            .bind(consumer)
            .bind(message_id)
            .execute(conn)
            .await
            .map_err(PgError::from)?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait]
impl Inbox for PgInbox {
    async fn is_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        check(consumer, message_id)?;
        sqlx::query_scalar::<Postgres, bool>(self.exists.clone())
            .bind(consumer)
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| PgError::from(e).into())
    }

    async fn mark_processed(&self, consumer: &str, message_id: &str) -> Result<bool, StoreError> {
        check(consumer, message_id)?;
        let r = sqlx::query::<Postgres>(self.insert.clone())
            .bind(consumer)
            .bind(message_id)
            .execute(&self.pool)
            .await
            .map_err(PgError::from)?;
        Ok(r.rows_affected() == 1)
    }
}
