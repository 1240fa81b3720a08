//! `Longshore::health()` covers everything the service opened: the broker, the store, the
//! consumers and relays it watches. A consumer whose circuit breaker is open, or a relay
//! stalled past its limit, makes the service not ready, and says why.

mod common;

use std::time::Duration;

use longshore::memory::MemoryBroker;
use longshore::prelude::*;
use longshore::{Broker, CircuitBreaker, OutboxRelay};
use longshore_testkit::{eventually, Names};

async fn ready_service_becomes_unready_when_a_part_fails(url: &str) {
    let backend = url.split("://").next().unwrap_or(url).to_string();
    let Some(ls) = longshore_testkit::require_broker(&backend, url, longshore::connect(url).await)
    else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("orders");
    let consumer = Consumer::new(
        ls.subscriber.clone(),
        Subscription::new(n.sub("orders"), [topic.clone()]),
    )
    .retry(RetryPolicy::none())
    .circuit_breaker(CircuitBreaker::new(1, Duration::from_secs(600)))
    .on_event("order_placed", |_ctx| async move {
        Err(HandlerError::transient("the database is down"))
    })
    .start()
    .await
    .expect("consumer");
    ls.watch_consumer("orders", &consumer);
    let relay = ls.spawn_relay(n.sub("relay")).expect("relay");

    let health = ls.health().await;
    assert!(health.is_ready(), "{:?}", health.problems());
    assert!(
        health.store.as_ref().is_some_and(|s| s.reachable),
        "{health:?}"
    );
    assert_eq!(health.consumers.len(), 1);
    assert_eq!(health.relays.len(), 1);
    assert!(health.relays[0].running);

    // A handler that keeps failing opens the breaker: the service is not ready.
    EventPublisher::new(ls.publisher.clone())
        .publish_to(&topic, &Event::new("order_placed", serde_json::json!({})))
        .await
        .expect("publish");
    let probe = consumer.probe();
    eventually("the breaker opens", || !probe.health().is_ready()).await;
    let health = ls.health().await;
    assert!(!health.is_ready());
    assert!(
        health
            .problems()
            .iter()
            .any(|p| p.contains("consumer orders")),
        "{:?}",
        health.problems()
    );
    // Shut down on purpose, it leaves the health.
    consumer.shutdown(Duration::from_secs(10)).await;
    let health = ls.health().await;
    assert!(health.consumers.is_empty());
    assert!(health.is_ready(), "{:?}", health.problems());

    // A relay whose publisher keeps failing stalls: not ready once past its limit. (The
    // healthy relay stops first, so it cannot take the row the stalled one keeps failing on.)
    relay.shutdown(Duration::from_secs(10)).await;
    let closed = MemoryBroker::default().publisher();
    closed.close().await.expect("close");
    let store = ls.store().expect("store");
    store
        .append(
            &n.sub("s"),
            ExpectedVersion::Any,
            vec![Event::new("x", serde_json::json!({}))],
        )
        .await
        .expect("append");
    let outbox = ls.outbox().expect("outbox");
    let stalled = OutboxRelay::new(n.sub("stalled"), outbox, closed)
        .stall_limit(Duration::from_millis(200))
        .spawn();
    ls.watch_relay(&stalled);
    eventually("the relay stalls", || !stalled.health().is_ready()).await;
    let health = ls.health().await;
    assert!(!health.is_ready());
    assert!(
        health.problems().iter().any(|p| p.contains("stalled for")),
        "{:?}",
        health.problems()
    );
    assert!(health.relays.iter().any(|r| r.last_error.is_some()));
    stalled.shutdown(Duration::from_secs(10)).await;
    // A closed publisher refuses every row alike: nothing was parked, the row still waits.
    let outbox = ls.outbox().expect("outbox");
    assert_eq!(outbox.failed_count().await.expect("failed"), 0);
    assert_eq!(outbox.pending().await.expect("pending"), 1);
    assert!(ls.health().await.is_ready());
}

#[tokio::test]
async fn service_health_memory() {
    ready_service_becomes_unready_when_a_part_fails("memory://").await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn service_health_postgres() {
    // A schema of its own: the relay must not claim other tests' rows.
    let url = common::postgres_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    let schema = Names::new().prefix().to_string();
    ready_service_becomes_unready_when_a_part_fails(&format!("{url}{sep}schema={schema}")).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn service_health_sqlite() {
    let url = common::sqlite_url();
    ready_service_becomes_unready_when_a_part_fails(&url).await;
}
