//! The `inventory_service` example (consumers, an aggregate, the outbox relay, health) on
//! every compiled-in backend, by URL only.
//!
//! The example's source is compiled into this test (its `run` function), so the test runs
//! this checkout's code. An unreachable broker skips the test with a printed reason, or fails
//! under `CI=true`. Brokers without an event store get `memory://` as the store URL. Each run
//! has its own shop prefix (SKUs, order ids, subscriptions); the RabbitMQ runs also get their
//! own exchange and the Postgres runs their own schema (dropped afterwards), so their relays
//! never take another run's outbox rows.

mod common;

#[allow(dead_code)]
#[path = "../examples/inventory_service/main.rs"]
mod inventory_service;

use longshore::Config;

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// Runs the service on `config` and checks what it saw: two orders reserved, one short, the
/// redelivered first order appended once, everything healthy.
async fn inventory(config: Config) {
    if !common::reachable(&config.url).await {
        return;
    }
    let shop = run_id();
    let report = inventory_service::run(&config, &shop)
        .await
        .unwrap_or_else(|e| panic!("inventory_service on {config}: {e}"));
    let (mut reserved, short) = (report.reserved.clone(), report.short.clone());
    reserved.sort();
    // Orders are handled concurrently: which two of the three get stock varies.
    assert_eq!(reserved.len(), 2, "{report:?}");
    assert_eq!(short.len(), 1, "{report:?}");
    let mut all: Vec<String> = reserved.into_iter().chain(short).collect();
    all.sort();
    let expected: Vec<String> = ["o-1", "o-2", "o-3"]
        .iter()
        .map(|n| format!("{shop}-{n}"))
        .collect();
    assert_eq!(all, expected, "{report:?}");
    assert_eq!(report.stock_version, 4, "{report:?}");
    assert!(report.ready, "not healthy: {report:?}");
}

#[tokio::test]
async fn inventory_service_memory() {
    inventory(Config::new("memory://")).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn inventory_service_sqlite() {
    inventory(Config::new(common::sqlite_url())).await;
}

#[cfg(feature = "rabbitmq")]
fn amqp_url_own_exchange() -> String {
    let url = common::amqp_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}exchange=longshore-inventory-{}", run_id())
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn inventory_service_rabbitmq() {
    inventory(Config::new(amqp_url_own_exchange()).with_store_url("memory://")).await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn inventory_service_nats() {
    inventory(Config::new(common::nats_url()).with_store_url("memory://")).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn inventory_service_kafka() {
    inventory(Config::new(common::kafka_url()).with_store_url("memory://")).await;
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;

    /// A schema of its own for one run, and its URL.
    pub fn own_schema() -> (String, String) {
        let schema = format!("lsinv_{}", run_id());
        let url = common::postgres_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        (format!("{url}{sep}schema={schema}"), schema)
    }

    pub async fn drop_schema(schema: &str) {
        use longshore::postgres::{sqlx, PgConfig, PgStore, Schema};
        if Schema::new(schema).is_err() {
            return;
        }
        let Ok(config) = PgConfig::from_url(&common::postgres_url()) else {
            return;
        };
        let Ok(store) = PgStore::connect(config).await else {
            return;
        };
        // The name was validated above ([a-z0-9_]), so the quoted interpolation is safe.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(store.pool())
        .await;
    }

    /// Runs the service with `config`, then drops the run's schema, pass or fail.
    pub async fn inventory_in(config: Config, schema: &str) {
        let outcome = tokio::spawn(inventory(config)).await;
        drop_schema(schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn inventory_service_postgres() {
    let (url, schema) = pg::own_schema();
    pg::inventory_in(Config::new(url), &schema).await;
}

/// A broker without a store of its own, with the store, outbox and inbox in Postgres.
#[cfg(all(feature = "rabbitmq", feature = "postgres"))]
#[tokio::test]
async fn inventory_service_rabbitmq_with_postgres_store() {
    let (store_url, schema) = pg::own_schema();
    let config = Config::new(amqp_url_own_exchange()).with_store_url(store_url);
    pg::inventory_in(config, &schema).await;
}
