//! Another writer of the queue table, for the suite's bad-input scenarios: INSERTs rows
//! straight into `longshore_queue`, one per subscription whose patterns match the topic (as
//! longshore's publisher routes them), checking nothing. Consumers find them by polling.

use std::sync::Arc;

use longshore_core::async_trait;
use longshore_sqlite::sqlx::{self, SqlitePool};
use longshore_sqlite::SqliteConfig;
use longshore_testkit::RawPublisher;

/// A pool of its own on the suite's file.
pub struct RawSqlite {
    pool: SqlitePool,
}

/// Opens the raw writer on `url` (the suite's `raw:` hook).
pub async fn raw(url: &str) -> Arc<dyn RawPublisher> {
    let config = SqliteConfig::from_url(url).expect("the suite's SQLite URL");
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&config.path)
        .busy_timeout(std::time::Duration::from_secs(10));
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("raw SQLite pool");
    Arc::new(RawSqlite { pool })
}

#[async_trait]
impl RawPublisher for RawSqlite {
    async fn publish_raw(
        &self,
        topic: &str,
        id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String> {
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(n, v)| (n.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let headers = serde_json::Value::Object(headers).to_string();
        let subs: Vec<(String, String)> =
            sqlx::query_as("SELECT name, patterns FROM longshore_subscriptions")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
        for (name, patterns) in subs {
            let patterns: Vec<String> =
                serde_json::from_str(&patterns).map_err(|e| e.to_string())?;
            if !patterns
                .iter()
                .any(|p| longshore_core::topic::matches(p, topic))
            {
                continue;
            }
            sqlx::query(
                "INSERT INTO longshore_queue (subscription, topic, message_id, headers, payload,
                                              available_at, published_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, 0)",
            )
            .bind(name)
            .bind(topic)
            .bind(id)
            .bind(&headers)
            .bind(body)
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
