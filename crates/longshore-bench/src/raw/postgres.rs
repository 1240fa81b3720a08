//! Raw sqlx as a queue: a hand-written table with the adapter's durability (`Ok` = committed,
//! consumers notified in the same transaction),
//! leases taken with `FOR UPDATE SKIP LOCKED` and one `DELETE` per ack. Unlike the adapter it
//! does no topic routing (one table, filtered by topic) and polls instead of `LISTEN`.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use longshore_core::Message;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool, Row};

use super::{Consume, ConsumerTask, RawClient, BEST_CHUNK};
use crate::measure::{parse_stamp, Recorder, SENT_HEADER};

/// The raw queue's wake-up channel: each insert notifies it in the same statement, as the
/// adapter's publish notifies its consumers (a commit with a NOTIFY costs more than one
/// without, and that cost is the guarantee consumers wake at once, not overhead; #19).
const NOTIFY_CHANNEL: &str = "longshore_bench_raw";

/// Insert statements in flight at once in [`RawClient::publish_best`] (the pool holds 8).
const BEST_STATEMENTS: usize = 4;

/// Raw sqlx on its own pool and schema (also holding the raw event store tables).
pub struct RawPg {
    pub pool: PgPool,
    pub schema: String,
}

impl RawPg {
    /// Creates `schema` with the adapter's tables (for the raw store) and a plain queue table.
    pub async fn connect(url: &str, schema: &str) -> crate::Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        let raw = RawPg {
            pool,
            schema: schema.to_string(),
        };
        if let Err(e) = raw.create().await {
            let _ = raw.drop_schema().await;
            return Err(e);
        }
        Ok(raw)
    }

    async fn create(&self) -> crate::Result<()> {
        let (pool, schema) = (&self.pool, &self.schema);
        longshore_postgres::migrate(pool, &longshore_postgres::Schema::new(schema)?).await?;
        for ddl in [
            format!(
                "CREATE TABLE IF NOT EXISTS \"{schema}\".raw_queue (
                   id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                   topic text NOT NULL, message_id text NOT NULL, message_key text,
                   headers jsonb NOT NULL, payload bytea NOT NULL, locked_until timestamptz)"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS raw_queue_topic_id ON \"{schema}\".raw_queue (topic, id)"
            ),
        ] {
            sqlx::query(AssertSqlSafe(ddl)).execute(pool).await?;
        }
        Ok(())
    }

    /// Drops the schema (end of the run).
    pub async fn drop_schema(&self) -> crate::Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

fn headers_json(m: &Message) -> crate::Result<String> {
    Ok(serde_json::to_string(&m.headers)?)
}

#[async_trait]
impl RawClient for RawPg {
    async fn publish(&self, topic: &str, m: &Message) -> crate::Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "WITH ins AS (INSERT INTO \"{}\".raw_queue \
             (topic, message_id, message_key, headers, payload) \
             VALUES ($1, $2, $3, $4::jsonb, $5) RETURNING 1) \
             SELECT pg_notify('{NOTIFY_CHANNEL}', $1) WHERE EXISTS (SELECT 1 FROM ins)",
            self.schema
        )))
        .bind(topic)
        .bind(&m.id)
        .bind(&m.key)
        .bind(headers_json(m)?)
        .bind(&m.payload[..])
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn publish_batch(&self, topic: &str, ms: &[Message]) -> crate::Result<()> {
        let ids: Vec<&str> = ms.iter().map(|m| m.id.as_str()).collect();
        let keys: Vec<Option<&str>> = ms.iter().map(|m| m.key.as_deref()).collect();
        let headers = ms
            .iter()
            .map(headers_json)
            .collect::<crate::Result<Vec<_>>>()?;
        let payloads: Vec<&[u8]> = ms.iter().map(|m| &m.payload[..]).collect();
        sqlx::query(AssertSqlSafe(format!(
            "WITH ins AS (INSERT INTO \"{}\".raw_queue \
             (topic, message_id, message_key, headers, payload) \
             SELECT $1, i, k, h::jsonb, p FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[]) \
             WITH ORDINALITY AS m(i, k, h, p, ord) ORDER BY ord RETURNING 1) \
             SELECT pg_notify('{NOTIFY_CHANNEL}', $1) WHERE EXISTS (SELECT 1 FROM ins)",
            self.schema
        )))
        .bind(topic)
        .bind(ids)
        .bind(keys)
        .bind(headers)
        .bind(payloads)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// sqlx at its best: multi-row `INSERT … SELECT FROM unnest` of [`BEST_CHUNK`] rows,
    /// [`BEST_STATEMENTS`] statements at once on the pool (each commits on its own); under a
    /// cap of `most` rows in flight, statements of `most / BEST_STATEMENTS` rows, and fewer
    /// statements at once when `most` is below [`BEST_STATEMENTS`].
    async fn publish_best(&self, topic: &str, ms: &[Message], most: usize) -> crate::Result<()> {
        let statements = BEST_STATEMENTS.min(most).max(1);
        let rows = (most / statements).clamp(1, BEST_CHUNK);
        let mut in_flight = futures::stream::FuturesUnordered::new();
        for chunk in ms.chunks(rows) {
            if in_flight.len() >= statements {
                if let Some(inserted) = in_flight.next().await {
                    inserted?;
                }
            }
            in_flight.push(self.publish_batch(topic, chunk));
        }
        while let Some(inserted) = in_flight.next().await {
            inserted?;
        }
        Ok(())
    }

    async fn start_consumer(&self, c: Consume<'_>) -> crate::Result<ConsumerTask> {
        let schema = self.schema.clone();
        let pool = self.pool.clone();
        let topic = c.topic.to_string();
        let fetch = format!(
            "UPDATE \"{schema}\".raw_queue q SET locked_until = now() + interval '30 seconds' \
             FROM (SELECT id FROM \"{schema}\".raw_queue WHERE topic = $1 \
                   AND (locked_until IS NULL OR locked_until < now()) \
                   ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) picked \
             WHERE q.id = picked.id RETURNING q.id, q.headers::text AS headers, q.payload"
        );
        let ack = format!("DELETE FROM \"{schema}\".raw_queue WHERE id = $1");
        let ack_all = format!("DELETE FROM \"{schema}\".raw_queue WHERE id = ANY($1)");
        let (n, prefetch, concurrency, rec, best) = (c.n, c.prefetch, c.concurrency, c.rec, c.best);
        Ok(tokio::spawn(async move {
            let mut done = 0;
            while done < n {
                let rows = sqlx::query(AssertSqlSafe(fetch.clone()))
                    .bind(&topic)
                    .bind(prefetch as i64)
                    .fetch_all(&pool)
                    .await?;
                if rows.is_empty() {
                    // A raw poller: nothing ready, ask again shortly.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                done += rows.len();
                if best {
                    // At its best: handle the fetched rows, then delete them in one statement.
                    let mut ids = Vec::with_capacity(rows.len());
                    for row in &rows {
                        ids.push(handle_row(row, &rec)?);
                    }
                    sqlx::query(AssertSqlSafe(ack_all.clone()))
                        .bind(&ids)
                        .execute(&pool)
                        .await?;
                    continue;
                }
                let results: Vec<crate::Result<()>> = futures::stream::iter(rows)
                    .map(|row| {
                        let (pool, rec, ack) = (&pool, &rec, &ack);
                        async move {
                            let id = handle_row(&row, rec)?;
                            sqlx::query(AssertSqlSafe(ack.clone()))
                                .bind(id)
                                .execute(pool)
                                .await?;
                            Ok(())
                        }
                    })
                    .buffer_unordered(concurrency)
                    .collect()
                    .await;
                results.into_iter().collect::<crate::Result<Vec<()>>>()?;
            }
            Ok(())
        }))
    }
}

/// Hands a fetched queue row to the recorder; returns its id.
fn handle_row(row: &PgRow, rec: &Recorder) -> crate::Result<i64> {
    let id: i64 = row.try_get("id")?;
    let headers: String = row.try_get("headers")?;
    let payload: Vec<u8> = row.try_get("payload")?;
    let headers: longshore_core::Headers = serde_json::from_str(&headers)?;
    rec.handle_raw(
        &payload,
        parse_stamp(headers.get(SENT_HEADER).map(String::as_str)),
    );
    Ok(id)
}
