//! Raw sqlx doing what the Postgres event store and outbox relay do: appends, `read_all`
//! pages, and a relay pass.

use longshore_core::{Codec, Event, JsonCodec, Message, RecordedEvent};
use sqlx::{AssertSqlSafe, PgPool, Row};

use crate::raw::RawClient;

/// The rows `PgStore::append` writes (stream upsert, events, outbox rows), with plain
/// statements in one transaction, into an identical schema.
pub async fn raw_append(
    pool: &PgPool,
    schema: &str,
    stream: &str,
    batch: &[Event],
) -> crate::Result<()> {
    let mut tx = pool.begin().await?;
    let version: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".streams AS s (stream_id, version) VALUES ($1, $2) \
         ON CONFLICT (stream_id) DO UPDATE SET version = s.version + $2 RETURNING s.version"
    )))
    .bind(stream)
    .bind(batch.len() as i64)
    .fetch_one(&mut *tx)
    .await?;
    let first = version - batch.len() as i64 + 1;
    let mut rows = Vec::with_capacity(batch.len());
    for e in batch {
        rows.push((
            serde_json::to_string(&e.data)?,
            serde_json::to_string(&e.metadata.headers)?,
        ));
    }
    let mut events = sqlx::QueryBuilder::new(format!(
        "INSERT INTO \"{schema}\".events (position, stream_id, version, event_id, event_type, data, \
         occurred_at, aggregate_id, correlation_id, causation_id, traceparent, headers) "
    ));
    events.push_values(
        batch.iter().zip(rows).enumerate(),
        |mut b, (i, (e, (data, headers)))| {
            b.push("((pg_current_xact_id()::text)::bigint << 16) + ")
                .push_bind_unseparated(i as i64)
                .push_bind(stream)
                .push_bind(first + i as i64)
                .push_bind(e.id)
                .push_bind(e.event_type.clone())
                .push_bind(data)
                .push_unseparated("::json")
                .push_bind(e.timestamp)
                .push_bind(e.metadata.aggregate_id.clone())
                .push_bind(e.metadata.correlation_id.clone())
                .push_bind(e.metadata.causation_id.clone())
                .push_bind(e.metadata.traceparent.clone())
                .push_bind(headers)
                .push_unseparated("::jsonb");
        },
    );
    events.build().execute(&mut *tx).await?;
    let mut messages = Vec::with_capacity(batch.len());
    for e in batch {
        let m = JsonCodec.encode(e)?;
        messages.push((e.default_topic(), serde_json::to_string(&m.headers)?, m));
    }
    let mut outbox = sqlx::QueryBuilder::new(format!(
        "INSERT INTO \"{schema}\".outbox (topic, message_id, message_key, headers, payload) "
    ));
    outbox.push_values(messages, |mut b, (topic, headers, m)| {
        b.push_bind(topic)
            .push_bind(m.id)
            .push_bind(m.key)
            .push_bind(headers)
            .push_unseparated("::jsonb")
            .push_bind(m.payload.to_vec());
    });
    outbox.build().execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Reads every event in pages of `page`, building the same `RecordedEvent`s as `read_all`.
/// `watermark`: bound the read below the oldest transaction in flight, as the store does
/// (without it a reader can pass an event that a slower transaction commits later).
pub async fn raw_read_all(
    pool: &PgPool,
    schema: &str,
    page: i64,
    watermark: bool,
) -> crate::Result<usize> {
    let bound = if watermark {
        " AND position < (SELECT ((pg_snapshot_xmin(pg_current_snapshot())::text)::bigint << 16))"
    } else {
        ""
    };
    let sql = format!(
        "SELECT position, stream_id, version, event_id, event_type, data::text AS data, occurred_at, \
         aggregate_id, correlation_id, causation_id, traceparent, headers::text AS headers \
         FROM \"{schema}\".events WHERE position > $1{bound} ORDER BY position LIMIT $2"
    );
    let mut after = 0_i64;
    let mut n = 0;
    loop {
        let rows = sqlx::query(AssertSqlSafe(sql.clone()))
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
            let data: String = row.try_get("data")?;
            let headers: String = row.try_get("headers")?;
            let version: i64 = row.try_get("version")?;
            events.push(RecordedEvent {
                stream_id: row.try_get("stream_id")?,
                version: version as u64,
                position: after as u64,
                event: Event {
                    id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    timestamp: row.try_get("occurred_at")?,
                    data: longshore_core::Data::from_json(data)?,
                    metadata: longshore_core::Metadata {
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

/// One relay pass done by hand: take up to `batch` outbox rows (locked), publish them with
/// the raw client (runs of one topic as one pipelined batch), delete them, commit.
pub async fn raw_relay_pass(
    pool: &PgPool,
    schema: &str,
    raw: &dyn RawClient,
    batch: i64,
) -> crate::Result<usize> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT seq, topic, message_id, message_key, headers::text AS headers, payload \
         FROM \"{schema}\".outbox ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
    )))
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
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM \"{schema}\".outbox WHERE seq = ANY($1)"
    )))
    .bind(&seqs)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(seqs.len())
}
