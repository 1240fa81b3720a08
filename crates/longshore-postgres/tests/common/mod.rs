//! Shared helpers of the integration tests: the server URL, one fresh schema per test, and
//! cleanup of schemas left behind by earlier runs.
#![allow(dead_code)]

pub mod raw;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use longshore_postgres::sqlx::{self, PgPool};
use longshore_postgres::{PgBroker, PgConfig, PgStore};

/// `DATABASE_URL`, defaulting to the local test server.
pub fn url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

const PREFIX: &str = "lst_";
/// Test schemas older than this are dropped by later runs.
const KEEP: Duration = Duration::from_secs(3600);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh schema name: `lst_<unix seconds>_<random>`.
pub fn fresh_schema() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{PREFIX}{}_{}", now_secs(), &id[..10])
}

/// Drops test schemas older than an hour (left by earlier runs); bounded and best effort.
pub async fn cleanup_old_schemas(pool: &PgPool) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'lst\\_%' LIMIT 200",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let cutoff = now_secs().saturating_sub(KEEP.as_secs());
    for name in names {
        let Some(secs) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        // Only names of our own shape, so the quoted interpolation below is safe.
        if secs < cutoff && longshore_postgres::Schema::new(&name).is_ok() {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
            )))
            .execute(pool)
            .await;
        }
    }
}

/// The server URL with a fresh schema (`?schema=`), so that a test's subscriptions, events and
/// outbox rows are its own, and a small pool.
pub fn fresh_schema_url() -> String {
    let url = url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}schema={}&max_connections=8", fresh_schema())
}

/// A config for a fresh schema, small pool.
pub fn config(schema: &str) -> PgConfig {
    PgConfig::from_url(&url())
        .expect("DATABASE_URL")
        .with_schema(schema)
        .expect("schema")
        .with_max_connections(8)
        .with_poll_interval(Duration::from_millis(250))
        // Tests create schemas (DDL with fsyncs) all the time; on a loaded machine such a
        // transaction can hold the server-wide watermark for a while.
        .with_read_settle(Duration::from_secs(10))
}

/// A broker on a fresh schema, or `None` (printed) when the server is unreachable outside CI.
pub async fn broker() -> Option<PgBroker> {
    let schema = fresh_schema();
    let attempt = PgBroker::connect(config(&schema)).await;
    let broker = longshore_testkit::require_broker("postgres", &url(), attempt)?;
    cleanup_old_schemas(broker.pool()).await;
    Some(broker)
}

/// A store on a fresh schema (panics if the server went away after the first check).
pub async fn store_with(outbox: bool) -> PgStore {
    let schema = fresh_schema();
    PgStore::connect(config(&schema).with_outbox(outbox))
        .await
        .expect("connect store")
}

/// Whether the server is reachable (fails under CI when not).
pub async fn reachable() -> bool {
    let attempt = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url())
        .await;
    match longshore_testkit::require_broker("postgres", &url(), attempt) {
        Some(pool) => {
            cleanup_old_schemas(&pool).await;
            pool.close().await;
            true
        }
        None => false,
    }
}

/// Advisory lock key shared by every test process: tests that depend on the `read_all`
/// watermark hold it shared; the test that keeps a write transaction open on purpose holds it
/// exclusively, so that its open transaction (which holds back the server-wide watermark)
/// never stalls another test's reads.
const WATERMARK_LOCK: i64 = 0x6c6f_6e67_7368_6f72;

/// Holds the advisory lock for as long as it lives (its own connection; dropping it ends the
/// session and so releases the lock).
pub struct WatermarkGuard(Option<sqlx::PgConnection>);

impl Drop for WatermarkGuard {
    fn drop(&mut self) {
        // Dropping the connection closes the session; the server releases its locks.
        self.0.take();
    }
}

async fn watermark_lock(shared: bool) -> WatermarkGuard {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url())
        .await
        .expect("lock connection");
    let sql = if shared {
        "SELECT pg_advisory_lock_shared($1)"
    } else {
        "SELECT pg_advisory_lock($1)"
    };
    sqlx::query(sql)
        .bind(WATERMARK_LOCK)
        .execute(&mut conn)
        .await
        .expect("advisory lock");
    WatermarkGuard(Some(conn))
}

/// For tests that read in global order.
pub async fn watermark_shared() -> WatermarkGuard {
    watermark_lock(true).await
}

/// For the test that holds a transaction open on purpose.
pub async fn watermark_exclusive() -> WatermarkGuard {
    watermark_lock(false).await
}
