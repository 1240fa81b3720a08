//! Another writer of the queue table, for the suite's bad-input scenarios: INSERTs rows
//! straight into `queue_messages`, one per subscription whose patterns match the topic (as
//! longshore's publisher routes them), and notifies the queue's channel, checking nothing.

use std::sync::Arc;
use std::time::Duration;

use longshore_core::async_trait;
use longshore_postgres::sqlx::{self, PgPool};
use longshore_postgres::PgConfig;
use longshore_testkit::RawPublisher;

/// A pool of its own on the suite's URL (and schema).
pub struct RawPg {
    pool: PgPool,
    insert: String,
    channel: String,
}

/// Opens the raw writer on `url` (the suite's `raw:` hook).
pub async fn raw(url: &str) -> Arc<dyn RawPublisher> {
    let config = PgConfig::from_url(url).expect("the suite's Postgres URL");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(config.connect_options().expect("connect options"))
        .await
        .expect("raw Postgres pool");
    let schema = config.schema.quoted();
    let insert = format!(
        "WITH ins AS (
  INSERT INTO {schema}.queue_messages (subscription, topic, message_id, headers, payload)
  SELECT s.name, $1, $2, jsonb_object($3::text[], $4::text[]), $5
  FROM {schema}.queue_subscriptions s WHERE ('.' || $1) ~ ANY (s.regexes)
  RETURNING subscription
)
SELECT pg_notify($6, subscription) FROM ins"
    );
    Arc::new(RawPg {
        pool,
        insert,
        // The queue's NOTIFY channel (a hint: consumers also poll).
        channel: format!("longshore_queue_{}", config.schema.name()),
    })
}

#[async_trait]
impl RawPublisher for RawPg {
    async fn publish_raw(
        &self,
        topic: &str,
        id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String> {
        let (names, values): (Vec<&str>, Vec<&str>) = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .unzip();
        sqlx::query(sqlx::AssertSqlSafe(self.insert.clone()))
            .bind(topic)
            .bind(id)
            .bind(names)
            .bind(values)
            .bind(body)
            .bind(&self.channel)
            .fetch_all(&self.pool)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
