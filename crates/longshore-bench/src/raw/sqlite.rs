//! Raw sqlx-sqlite as a queue: a hand-written table in a file of its own, with the adapter's
//! durability (`Ok` = committed, WAL, the same `synchronous`), one writer connection (SQLite
//! has one writer at a time, so queueing writers in-process beats spinning on the file lock,
//! as the adapter does), prepared statements (sqlx caches them per connection), a batch in one
//! transaction, a lease taken with one `UPDATE … RETURNING` and one `DELETE` per ack. Unlike
//! the adapter it does no subscription routing (one row per message, filtered by topic) and
//! polls instead of being woken.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use longshore_core::Message;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row;

use super::{Consume, ConsumerTask, RawClient};
use crate::measure::{parse_stamp, SENT_HEADER};

const INSERT: &str = "INSERT INTO raw_queue (topic, message_id, message_key, headers, payload) \
                      VALUES (?1, ?2, ?3, ?4, ?5)";

/// ?1 topic, ?2 limit, ?3 lease end, ?4 now (Unix ms).
const FETCH: &str = "UPDATE raw_queue SET locked_until = ?3 WHERE id IN (
  SELECT id FROM raw_queue WHERE topic = ?1 AND (locked_until IS NULL OR locked_until < ?4)
  ORDER BY id LIMIT ?2)
RETURNING id, headers, payload";

const ACK: &str = "DELETE FROM raw_queue WHERE id = ?1";

/// The adapter's lease (its default visibility timeout).
const LEASE_MS: i64 = 30_000;

/// Unix time in milliseconds (the lease clock, as the adapter's).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2))
}

/// Connection options for `path` as the adapter opens its files: WAL, `busy_timeout` 5 s,
/// and `synchronous` NORMAL or FULL (`full`).
pub fn options(path: &Path, full: bool) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5))
        .synchronous(if full {
            SqliteSynchronous::Full
        } else {
            SqliteSynchronous::Normal
        })
        .foreign_keys(false)
}

/// A pool of one connection on `path`: every write of the raw side goes through it.
pub async fn writer(path: &Path, full: bool) -> crate::Result<SqlitePool> {
    Ok(SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options(path, full))
        .await?)
}

/// Raw sqlx-sqlite on a file of its own, which also holds the adapter's tables (for the raw
/// event store: `longshore-sqlite` creates them, as the Postgres raw side migrates its schema).
pub struct RawSqlite {
    pub writer: SqlitePool,
}

impl RawSqlite {
    /// Creates the file at `path` with longshore's tables and a plain queue table.
    pub async fn create(path: &Path, full: bool) -> crate::Result<Self> {
        let config = longshore_sqlite::SqliteConfig::new(path);
        longshore_sqlite::SqliteStore::connect(config)
            .await?
            .close()
            .await;
        let writer = writer(path, full).await?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS raw_queue (
               id INTEGER PRIMARY KEY, topic TEXT NOT NULL, message_id TEXT NOT NULL,
               message_key TEXT, headers TEXT NOT NULL, payload BLOB NOT NULL,
               locked_until INTEGER)",
            "CREATE INDEX IF NOT EXISTS raw_queue_topic_id ON raw_queue (topic, id)",
        ] {
            sqlx::query(ddl).execute(&writer).await?;
        }
        Ok(RawSqlite { writer })
    }

    /// Closes the pool (end of the run; the file is removed with its directory).
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

fn headers_json(m: &Message) -> crate::Result<String> {
    Ok(serde_json::to_string(&m.headers)?)
}

async fn insert(conn: &mut sqlx::SqliteConnection, topic: &str, m: &Message) -> crate::Result<()> {
    sqlx::query(INSERT)
        .bind(topic)
        .bind(&m.id)
        .bind(&m.key)
        .bind(headers_json(m)?)
        .bind(&m.payload[..])
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl RawClient for RawSqlite {
    async fn publish(&self, topic: &str, m: &Message) -> crate::Result<()> {
        // Autocommit: `Ok` once committed.
        let mut conn = self.writer.acquire().await?;
        insert(&mut conn, topic, m).await
    }

    async fn publish_batch(&self, topic: &str, ms: &[Message]) -> crate::Result<()> {
        // One transaction, one commit (one WAL sync under FULL), as the adapter's batch.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for m in ms {
            insert(&mut tx, topic, m).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn start_consumer(&self, c: Consume<'_>) -> crate::Result<ConsumerTask> {
        let pool = self.writer.clone();
        let topic = c.topic.to_string();
        let (n, prefetch, concurrency, rec) = (c.n, c.prefetch, c.concurrency, c.rec);
        Ok(tokio::spawn(async move {
            let mut done = 0;
            while done < n {
                let now = now_ms();
                let rows = sqlx::query(FETCH)
                    .bind(&topic)
                    .bind(i64::try_from(prefetch).unwrap_or(i64::MAX))
                    .bind(now.saturating_add(LEASE_MS))
                    .bind(now)
                    .fetch_all(&pool)
                    .await?;
                if rows.is_empty() {
                    // A raw poller: nothing ready, ask again shortly.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                done += rows.len();
                let results: Vec<crate::Result<()>> = futures::stream::iter(rows)
                    .map(|row| {
                        let (pool, rec) = (&pool, &rec);
                        async move {
                            let id: i64 = row.try_get("id")?;
                            let headers: String = row.try_get("headers")?;
                            let payload: Vec<u8> = row.try_get("payload")?;
                            let headers: longshore_core::Headers = serde_json::from_str(&headers)?;
                            rec.handle_raw(
                                &payload,
                                parse_stamp(headers.get(SENT_HEADER).map(String::as_str)),
                            );
                            sqlx::query(ACK).bind(id).execute(pool).await?;
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
