//! Reading the store: a stream's events, every event in global order, checkpoints, and
//! waiting for new events (catch-up).

use std::time::Duration;

use chrono::{DateTime, Utc};
use longshore_core::{CodecError, Data, Event, Metadata, RecordedEvent, StoreError};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::client::now_ms;
use crate::error::SqliteError;
use crate::store::{limit, to_i64, validate_label, validate_stream, SqliteStore};

const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, data, \
     occurred_at, aggregate_id, correlation_id, causation_id, traceparent, headers";

impl SqliteStore {
    /// Up to `limit_n` events of a stream from version `from`, in version order.
    pub(crate) async fn read_stream_page(
        &self,
        stream_id: &str,
        from: u64,
        limit_n: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        validate_stream(stream_id)?;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM longshore_events WHERE stream_id = ?1 AND version >= ?2 \
             ORDER BY version LIMIT ?3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(stream_id)
            .bind(to_i64(from))
            .bind(limit(limit_n))
            .fetch_all(&self.pools.reader)
            .await
            .map_err(SqliteError::from)?;
        rows.iter().map(decode_event).collect()
    }

    /// Up to `limit_n` events after `after` in global order. Positions are assigned under the
    /// write lock in commit order, so every committed event below the last one read is
    /// already visible: no watermark is needed.
    pub(crate) async fn read_all_page(
        &self,
        after: u64,
        limit_n: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM longshore_events WHERE position > ?1 \
             ORDER BY position LIMIT ?2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to_i64(after))
            .bind(limit(limit_n))
            .fetch_all(&self.pools.reader)
            .await
            .map_err(SqliteError::from)?;
        rows.iter().map(decode_event).collect()
    }

    /// The saved position of checkpoint `name`.
    pub(crate) async fn checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        validate_label("checkpoint", name)?;
        let v: Option<i64> =
            sqlx::query_scalar("SELECT position FROM longshore_checkpoints WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.pools.reader)
                .await
                .map_err(SqliteError::from)?;
        Ok(v.and_then(|p| u64::try_from(p).ok()))
    }

    /// Saves checkpoint `name` at `position`.
    pub(crate) async fn store_checkpoint(
        &self,
        name: &str,
        position: u64,
    ) -> Result<(), StoreError> {
        validate_label("checkpoint", name)?;
        sqlx::query(
            "INSERT INTO longshore_checkpoints (name, position, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET position = excluded.position,
                                              updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(to_i64(position))
        .bind(now_ms())
        .execute(&self.pools.writer)
        .await
        .map_err(SqliteError::from)?;
        Ok(())
    }

    /// Returns when an event after `after` is readable, or after `timeout`. Appends in this
    /// process wake it at once; another process's are seen within one poll interval.
    pub(crate) async fn wait_for_events_after(&self, after: u64, timeout: Duration) {
        let poll = self.pools.config.poll_interval;
        let wait = async {
            loop {
                let notified = self.pools.wake.events().notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let present: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM longshore_events WHERE position > ?1)",
                )
                .bind(to_i64(after))
                .fetch_one(&self.pools.reader)
                .await
                .unwrap_or(false);
                if present {
                    return;
                }
                tokio::select! {
                    _ = &mut notified => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

fn column<'r, T>(row: &'r SqliteRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(name).map_err(|e| SqliteError::from(e).into())
}

fn malformed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Codec(CodecError::Malformed(format!("stored {what}: {e}")))
}

/// The recorded event of a `longshore_events` row.
fn decode_event(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = column(row, "position")?;
    let version: i64 = column(row, "version")?;
    let data: String = column(row, "data")?;
    let headers: String = column(row, "headers")?;
    let event_type: String = column(row, "event_type")?;
    let id: String = column(row, "event_id")?;
    let occurred: String = column(row, "occurred_at")?;
    let data = Data::from_json(data).map_err(|e| {
        StoreError::Codec(CodecError::Data {
            event_type: event_type.clone(),
            message: e.to_string(),
        })
    })?;
    Ok(RecordedEvent {
        stream_id: column(row, "stream_id")?,
        version: u64::try_from(version).unwrap_or(0),
        position: u64::try_from(position).unwrap_or(0),
        event: Event {
            id: Uuid::parse_str(&id).map_err(|e| malformed("event id", e))?,
            event_type,
            timestamp: DateTime::parse_from_rfc3339(&occurred)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| malformed("timestamp", e))?,
            data,
            metadata: Metadata {
                aggregate_id: column(row, "aggregate_id")?,
                correlation_id: column(row, "correlation_id")?,
                causation_id: column(row, "causation_id")?,
                traceparent: column(row, "traceparent")?,
                headers: serde_json::from_str(&headers).map_err(SqliteError::StoredHeaders)?,
            },
        },
    })
}
