//! Reading the store: a stream's events, every event in global order below the watermark
//! (see the crate docs), checkpoints, and waiting for new events (catch-up).

use std::time::Duration;

use longshore_core::{CodecError, Data, Event, Metadata, RecordedEvent, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row};

use crate::error::PgError;
use crate::store::{limit, to_i64, validate_label, validate_stream, PgStore};

impl PgStore {
    /// Up to `limit_n` events of a stream from version `from`, in version order.
    pub(crate) async fn read_stream_page(
        &self,
        stream_id: &str,
        from: u64,
        limit_n: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        validate_stream(stream_id)?;
        let rows = sqlx::query::<Postgres>(self.state.sql.read_stream.clone())
            .bind(stream_id)
            .bind(to_i64(from))
            .bind(limit(limit_n))
            .fetch_all(&self.state.pool)
            .await
            .map_err(PgError::from)?;
        rows.iter().map(decode_event).collect()
    }

    /// Up to `limit_n` events after `after` in global order, waiting briefly for committed
    /// events the watermark still holds back.
    ///
    /// Committed events above the watermark wait for older transactions still running
    /// somewhere on the server. Those are usually milliseconds from committing, so a page
    /// that is not full waits for them (up to `read_settle`, returning as soon as they are
    /// released): sequential writers get read-your-writes in practice, and a long
    /// transaction only delays the page by the bound.
    pub(crate) async fn read_all_settled(
        &self,
        after: u64,
        limit_n: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let deadline = tokio::time::Instant::now() + self.state.config.read_settle;
        let mut pause = Duration::from_millis(1);
        loop {
            let (events, held_back) = self.read_all_page(after, limit_n).await?;
            if events.len() >= limit_n || !held_back || tokio::time::Instant::now() >= deadline {
                return Ok(events);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// One page below the watermark, and whether committed events wait above it.
    async fn read_all_page(
        &self,
        after: u64,
        limit_n: usize,
    ) -> Result<(Vec<RecordedEvent>, bool), StoreError> {
        let rows = sqlx::query::<Postgres>(self.state.sql.read_all.clone())
            .bind(to_i64(after))
            .bind(limit(limit_n))
            .fetch_all(&self.state.pool)
            .await
            .map_err(PgError::from)?;
        let held_back = match rows.first() {
            Some(row) => row.try_get::<bool, _>("held_back").map_err(PgError::from)?,
            None => false,
        };
        // With no event, the LEFT JOIN still yields one row whose columns are NULL.
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            if row
                .try_get::<Option<i64>, _>("position")
                .map_err(PgError::from)?
                .is_some()
            {
                events.push(decode_event(row)?);
            }
        }
        Ok((events, held_back))
    }

    /// The saved position of checkpoint `name`.
    pub(crate) async fn checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        validate_label("checkpoint", name)?;
        let v: Option<i64> =
            sqlx::query_scalar::<Postgres, i64>(self.state.sql.load_checkpoint.clone())
                .bind(name)
                .fetch_optional(&self.state.pool)
                .await
                .map_err(PgError::from)?;
        Ok(v.map(|p| p as u64))
    }

    /// Saves checkpoint `name` at `position`.
    pub(crate) async fn store_checkpoint(
        &self,
        name: &str,
        position: u64,
    ) -> Result<(), StoreError> {
        validate_label("checkpoint", name)?;
        sqlx::query::<Postgres>(self.state.sql.save_checkpoint.clone())
            .bind(name)
            .bind(to_i64(position))
            .execute(&self.state.pool)
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    /// Returns when an event after `after` may be readable (a notification, or one already
    /// there), or after `timeout`.
    pub(crate) async fn wait_for_events_after(&self, after: u64, timeout: Duration) {
        let hub = &self.state.hub;
        let wait = async {
            hub.ensure_listening().await;
            let notified = hub.all().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Events committed before we listened would never be notified to us: look once.
            let present = sqlx::query_scalar::<Postgres, bool>(self.state.sql.any_after.clone())
                .bind(to_i64(after))
                .fetch_one(&self.state.pool)
                .await
                .unwrap_or(false);
            if !present {
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

fn column<'r, T>(row: &'r PgRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name).map_err(|e| PgError::from(e).into())
}

/// The recorded event of an `events` row (data and headers selected as text).
fn decode_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = column(row, "position")?;
    let version: i64 = column(row, "version")?;
    let data: String = column(row, "data")?;
    let headers: String = column(row, "headers")?;
    let event_type: String = column(row, "event_type")?;
    let data = Data::from_json(data).map_err(|e| {
        StoreError::Codec(CodecError::Data {
            event_type: event_type.clone(),
            message: e.to_string(),
        })
    })?;
    Ok(RecordedEvent {
        stream_id: column(row, "stream_id")?,
        version: version as u64,
        position: position as u64,
        event: Event {
            id: column(row, "event_id")?,
            event_type,
            timestamp: column(row, "occurred_at")?,
            data,
            metadata: Metadata {
                aggregate_id: column(row, "aggregate_id")?,
                correlation_id: column(row, "correlation_id")?,
                causation_id: column(row, "causation_id")?,
                traceparent: column(row, "traceparent")?,
                headers: serde_json::from_str(&headers).map_err(PgError::StoredHeaders)?,
            },
        },
    })
}
