//! Raw sqlx-sqlite doing what the SQLite event store and outbox relay do: appends, `read_all`
//! pages, and a relay pass, on files with longshore's tables.

use chrono::{DateTime, SecondsFormat, Utc};
use longshore_core::{Codec, Event, JsonCodec, Message, Metadata, RecordedEvent};
use sqlx::{Row, SqlitePool};

use crate::raw::RawClient;

const UPSERT_STREAM: &str = "INSERT INTO longshore_streams (stream_id, version) VALUES (?1, ?2)
ON CONFLICT (stream_id) DO UPDATE SET version = version + ?2 RETURNING version";

const INSERT_EVENT: &str = "INSERT INTO longshore_events
  (stream_id, version, event_id, event_type, data, occurred_at, aggregate_id, correlation_id,
   causation_id, traceparent, headers, recorded_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

const INSERT_OUTBOX: &str = "INSERT INTO longshore_outbox
  (topic, message_id, message_key, headers, payload, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const READ_ALL: &str = "SELECT position, stream_id, version, event_id, event_type, data, \
     occurred_at, aggregate_id, correlation_id, causation_id, traceparent, headers \
     FROM longshore_events WHERE position > ?1 ORDER BY position LIMIT ?2";

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The rows `SqliteStore::append` writes (events, outbox rows, the stream's version), with
/// prepared statements in one `BEGIN IMMEDIATE` transaction on `writer` (one connection).
/// Unlike the store it checks no expected version and no known event ids.
pub async fn raw_append(writer: &SqlitePool, stream: &str, batch: &[Event]) -> crate::Result<()> {
    // Encoded before the transaction, as the store does, so the write lock is held briefly.
    let mut rows = Vec::with_capacity(batch.len());
    for e in batch {
        let m = JsonCodec.encode(e)?;
        rows.push((
            serde_json::to_string(&e.data)?,
            serde_json::to_string(&e.metadata.headers)?,
            serde_json::to_string(&m.headers)?,
            m,
        ));
    }
    let now = now_ms();
    let n = i64::try_from(batch.len())?;
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let version: i64 = sqlx::query_scalar(UPSERT_STREAM)
        .bind(stream)
        .bind(n)
        .fetch_one(&mut *tx)
        .await?;
    let mut v = version - n;
    for (e, (data, headers, outbox_headers, m)) in batch.iter().zip(rows) {
        v += 1;
        let md = &e.metadata;
        sqlx::query(INSERT_EVENT)
            .bind(stream)
            .bind(v)
            .bind(e.id.to_string())
            .bind(&e.event_type)
            .bind(data)
            .bind(e.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true))
            .bind(&md.aggregate_id)
            .bind(&md.correlation_id)
            .bind(&md.causation_id)
            .bind(&md.traceparent)
            .bind(headers)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_OUTBOX)
            .bind(e.default_topic())
            .bind(&m.id)
            .bind(&m.key)
            .bind(outbox_headers)
            .bind(&m.payload[..])
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Reads every event in pages of `page`, building the same `RecordedEvent`s as `read_all`.
/// No watermark: positions are handed out under SQLite's one write lock, in commit order.
pub async fn raw_read_all(pool: &SqlitePool, page: i64) -> crate::Result<usize> {
    let mut after = 0_i64;
    let mut n = 0;
    loop {
        let rows = sqlx::query(READ_ALL)
            .bind(after)
            .bind(page)
            .fetch_all(pool)
            .await?;
        if rows.is_empty() {
            return Ok(n);
        }
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            after = row.try_get("position")?;
            let version: i64 = row.try_get("version")?;
            let id: String = row.try_get("event_id")?;
            let occurred: String = row.try_get("occurred_at")?;
            let data: String = row.try_get("data")?;
            let headers: String = row.try_get("headers")?;
            events.push(RecordedEvent {
                stream_id: row.try_get("stream_id")?,
                version: u64::try_from(version)?,
                position: u64::try_from(after)?,
                event: Event {
                    id: uuid::Uuid::parse_str(&id)?,
                    event_type: row.try_get("event_type")?,
                    timestamp: DateTime::parse_from_rfc3339(&occurred)?.with_timezone(&Utc),
                    data: longshore_core::Data::from_json(data)?,
                    metadata: Metadata {
                        aggregate_id: row.try_get("aggregate_id")?,
                        correlation_id: row.try_get("correlation_id")?,
                        causation_id: row.try_get("causation_id")?,
                        traceparent: row.try_get("traceparent")?,
                        headers: serde_json::from_str(&headers)?,
                    },
                },
            });
        }
        n += events.len();
        std::hint::black_box(events);
    }
}

/// One relay pass done by hand on the store's file: take the first `batch` outbox rows
/// inside a `BEGIN IMMEDIATE` transaction (SQLite's write lock: no other relay can take
/// them), publish them with the raw client (runs of one topic as one batch), delete them,
/// commit.
pub async fn raw_relay_pass(
    writer: &SqlitePool,
    raw: &dyn RawClient,
    batch: i64,
) -> crate::Result<usize> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    let rows = sqlx::query(
        "SELECT seq, topic, message_id, message_key, headers, payload \
         FROM longshore_outbox ORDER BY seq LIMIT ?1",
    )
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    let mut claimed = Vec::with_capacity(rows.len());
    for row in &rows {
        let headers: String = row.try_get("headers")?;
        let payload: Vec<u8> = row.try_get("payload")?;
        let mut m = Message::new(payload).with_id(row.try_get::<String, _>("message_id")?);
        m.key = row.try_get("message_key")?;
        m.headers = serde_json::from_str(&headers)?;
        claimed.push((row.try_get::<i64, _>("seq")?, row.try_get("topic")?, m));
    }
    let seqs = super::publish_in_topic_runs(raw, claimed).await?;
    if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
        // The rows read are the first ones in seq order: one range delete.
        sqlx::query("DELETE FROM longshore_outbox WHERE seq BETWEEN ?1 AND ?2")
            .bind(first)
            .bind(last)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(seqs.len())
}
