//! The `event_sourced_orders` and `dlq_replay` examples on every compiled-in backend.
//!
//! The examples' sources are compiled into this test (their `run` functions, which check the
//! outcome themselves), so the test always runs the code of this checkout with this build's
//! features — no stale example binary. Each test checks its broker first: under `CI=true` an
//! unreachable broker fails, elsewhere the test is skipped with a printed reason.
//!
//! Isolation on shared brokers: every run uses fresh subscription names; the event-sourcing
//! runs also get their own RabbitMQ exchange and Postgres schema (dropped afterwards), so
//! their outbox relays and `events.#` projections never meet another run's rows.

mod common;

#[allow(dead_code)]
#[path = "../examples/event_sourced_orders/main.rs"]
mod event_sourced_orders;

#[allow(dead_code)]
#[path = "../examples/dlq_replay/main.rs"]
mod dlq_replay;

use std::collections::BTreeSet;

use longshore::Config;

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The event-sourcing example on `config`; panics unless its own outcome check passed.
async fn event_sourced(config: Config) -> Option<event_sourced_orders::Report> {
    if !common::reachable(&config.url).await {
        return None;
    }
    if let Some(store) = &config.store_url {
        if !common::reachable(store).await {
            return None;
        }
    }
    let projection = format!("order-projection-{}", run_id());
    let report = event_sourced_orders::run(&config, &projection)
        .await
        .unwrap_or_else(|e| panic!("event_sourced_orders on {config}: {e}"));
    assert_eq!(report.conflicts, 1, "{report:?}");
    assert_eq!(report.events, 7, "{report:?}");
    assert_eq!(report.applied, 7, "{report:?}");
    let expected_dups = if report.broker_dedup { 0 } else { 7 };
    assert_eq!(report.duplicates_skipped, expected_dups, "{report:?}");
    assert!(report.relayed >= 7, "{report:?}");
    Some(report)
}

/// The DLQ example's demo on `url` with `options`; panics unless its outcome is the expected
/// one.
async fn dlq(url: &str, options: dlq_replay::Options) -> Option<dlq_replay::Report> {
    if !common::reachable(url).await {
        return None;
    }
    let options = dlq_replay::Options {
        subscription: Some(format!("payments-{}", run_id())),
        ..options
    };
    let report = dlq_replay::run(&Config::new(url), &options)
        .await
        .unwrap_or_else(|e| panic!("dlq_replay on {}: {e}", Config::new(url)));
    assert_eq!(report.dead_lettered, set(&["p-2", "p-3"]));
    Some(report)
}

/// Default demo: the provider timeout (p-2) is replayed and charged, the declined card (p-3)
/// stays in the dead-letter queue.
async fn dlq_default(url: &str) {
    if let Some(report) = dlq(url, dlq_replay::Options::default()).await {
        assert_eq!(report.replayed, set(&["p-2"]));
        assert_eq!(report.handled_after_replay, set(&["p-2"]));
        assert_eq!(report.dead_at_end, set(&["p-3"]));
    }
}

/// The demo with `--keep` leaves the declined card (p-3) in the dead-letter queue; a second
/// process-like run with `--existing --filter declined` replays it to its original topic, where
/// a plain consumer of the subscription receives it without the dead-letter headers.
#[allow(dead_code)]
async fn dlq_keep_then_existing(url: &str) {
    use futures::StreamExt;
    let name = format!("payments-{}", run_id());
    let keep = dlq_replay::Options {
        subscription: Some(name.clone()),
        keep: true,
        ..Default::default()
    };
    if !common::reachable(url).await {
        return;
    }
    let config = Config::new(url);
    let first = dlq_replay::run(&config, &keep)
        .await
        .unwrap_or_else(|e| panic!("dlq_replay --keep on {config}: {e}"));
    assert_eq!(first.dead_at_end, set(&["p-3"]));

    let existing = dlq_replay::Options {
        subscription: Some(name.clone()),
        existing: true,
        filter: Some("declined".into()),
        idle: Some(std::time::Duration::from_secs(5)),
        ..Default::default()
    };
    let second = dlq_replay::run(&config, &existing)
        .await
        .unwrap_or_else(|e| panic!("dlq_replay --existing on {config}: {e}"));
    assert_eq!(second.dead_lettered, set(&["p-3"]));
    assert_eq!(second.replayed, set(&["p-3"]));
    assert!(second.dead_at_end.is_empty());

    let ls = longshore::connect(url).await.expect("connect");
    let mut stream = ls
        .subscriber
        .subscribe(&longshore::Subscription::new(
            name.clone(),
            [format!("{name}.*")],
        ))
        .await
        .expect("subscribe");
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(60), stream.next())
        .await
        .expect("the replayed message in time")
        .expect("stream open")
        .expect("delivery");
    let body: serde_json::Value =
        serde_json::from_slice(&delivery.message().payload).expect("json body");
    assert_eq!(body["data"]["payment_id"], "p-3");
    assert_eq!(delivery.topic, format!("{name}.payment_requested"));
    for h in [
        longshore::HEADER_DLQ_REASON,
        longshore::HEADER_DLQ_TOPIC,
        longshore::HEADER_DLQ_ATTEMPTS,
    ] {
        assert!(
            !delivery.message().headers.contains_key(h),
            "{h} left on the replayed message"
        );
    }
    delivery.ack().await.expect("ack");
    drop(stream);
    ls.subscriber.close().await.expect("close");
    ls.publisher.close().await.expect("close");
}

#[tokio::test]
async fn event_sourced_orders_memory() {
    let report = event_sourced(Config::new("memory://"))
        .await
        .expect("memory");
    assert_eq!(report.backend, "memory");
}

#[tokio::test]
async fn dlq_replay_memory() {
    dlq_default("memory://").await;
}

#[tokio::test]
async fn dlq_replay_memory_all_and_filter() {
    // --all: both go back; p-3 is declined again and dead-lettered again.
    let all = dlq_replay::Options {
        all: true,
        ..Default::default()
    };
    let report = dlq("memory://", all).await.expect("memory");
    assert_eq!(report.replayed, set(&["p-2", "p-3"]));
    assert_eq!(report.handled_after_replay, set(&["p-2"]));
    assert_eq!(report.dead_at_end, set(&["p-3"]));
    // A filter matching nothing replays nothing.
    let none = dlq_replay::Options {
        filter: Some("no such text".into()),
        ..Default::default()
    };
    let report = dlq("memory://", none).await.expect("memory");
    assert!(report.replayed.is_empty());
    assert_eq!(report.dead_at_end, set(&["p-2", "p-3"]));
    // A dry run replays nothing either.
    let dry = dlq_replay::Options {
        dry_run: true,
        ..Default::default()
    };
    let report = dlq("memory://", dry).await.expect("memory");
    assert!(report.replayed.is_empty());
}

#[cfg(feature = "rabbitmq")]
fn amqp_url() -> String {
    common::amqp_url()
}

/// A RabbitMQ URL with an exchange of its own, so the run's `events.#` queue never collects
/// other runs' events.
#[cfg(feature = "rabbitmq")]
fn amqp_url_own_exchange() -> String {
    let url = amqp_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}exchange=longshore-examples-{}", run_id())
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn event_sourced_orders_rabbitmq() {
    event_sourced(Config::new(amqp_url_own_exchange())).await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn dlq_replay_rabbitmq() {
    dlq_default(&amqp_url()).await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn dlq_replay_existing_rabbitmq() {
    dlq_keep_then_existing(&amqp_url()).await;
}

#[cfg(feature = "nats")]
fn nats_url() -> String {
    common::nats_url()
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn event_sourced_orders_nats() {
    if let Some(report) = event_sourced(Config::new(nats_url())).await {
        assert!(report.broker_dedup, "JetStream declares a dedup window");
    }
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn dlq_replay_nats() {
    dlq_default(&nats_url()).await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn dlq_replay_existing_nats() {
    dlq_keep_then_existing(&nats_url()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn event_sourced_orders_kafka() {
    event_sourced(Config::new(common::kafka_url())).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn dlq_replay_kafka() {
    dlq_default(&common::kafka_url()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn dlq_replay_existing_kafka() {
    dlq_keep_then_existing(&common::kafka_url()).await;
}

#[cfg(feature = "postgres")]
mod pg {
    use super::*;

    pub fn url() -> String {
        common::postgres_url()
    }

    /// A schema of its own for one run (the outbox relay takes every pending row of its
    /// schema), and its URL.
    pub fn own_schema() -> (String, String) {
        let schema = format!("lsex_{}", run_id());
        let url = url();
        let sep = if url.contains('?') { '&' } else { '?' };
        (format!("{url}{sep}schema={schema}"), schema)
    }

    pub async fn drop_schema(schema: &str) {
        use longshore::postgres::{sqlx, PgConfig, PgStore, Schema};
        if Schema::new(schema).is_err() {
            return;
        }
        let Ok(config) = PgConfig::from_url(&url()) else {
            return;
        };
        let Ok(store) = PgStore::connect(config.with_outbox(true)).await else {
            return;
        };
        // The name was validated above ([a-z0-9_]), so the quoted interpolation is safe.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(store.pool())
        .await;
    }

    /// Runs the event-sourcing example with `config`, then drops the run's schema.
    pub async fn event_sourced_in(config: Config, schema: &str) {
        let outcome = tokio::spawn(event_sourced(config)).await;
        drop_schema(schema).await;
        if let Err(e) = outcome {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn event_sourced_orders_postgres() {
    let (url, schema) = pg::own_schema();
    pg::event_sourced_in(Config::new(url), &schema).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn dlq_replay_postgres() {
    dlq_default(&pg::url()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn dlq_replay_existing_postgres() {
    dlq_keep_then_existing(&pg::url()).await;
}

/// A broker without a store of its own, with the event store (and outbox and inbox) in
/// Postgres: `LONGSHORE_URL` + `LONGSHORE_STORE_URL`.
#[cfg(all(feature = "rabbitmq", feature = "postgres"))]
#[tokio::test]
async fn event_sourced_orders_rabbitmq_with_postgres_store() {
    let (store_url, schema) = pg::own_schema();
    let config = Config::new(amqp_url_own_exchange()).with_store_url(store_url);
    pg::event_sourced_in(config, &schema).await;
}
