//! The tests of `examples/testing` (the service's own tests, written with
//! `longshore::testing`): in memory by default, on any broker with `LONGSHORE_TEST_URL`.
//! Kept here rather than in the example so `cargo test --workspace` runs them.
#![cfg(feature = "testing")]

#[allow(dead_code)]
#[path = "../examples/testing/service.rs"]
mod service;

use std::time::Duration;

use longshore::prelude::*;
use longshore::testing::TestBus;
use longshore::{assert_dead_lettered, assert_published};
use service::{OrderPacked, OrderPlaced, OrderShipped, PaymentTaken, Service, EMPTY_ORDER};

const QUIET: Duration = Duration::from_secs(60);

/// A bus on `LONGSHORE_TEST_URL` (memory when unset); `None` when that broker is unreachable
/// outside CI (the test is then skipped, saying why).
async fn bus() -> Option<TestBus> {
    let url = TestBus::url_from_env();
    let backend = url.split("://").next().unwrap_or("memory").to_string();
    longshore_testkit::require_broker(&backend, &url, TestBus::connect(&url).await)
}

/// The service under test on the bus, and the subscription of the service downstream of it
/// (declared only, so brokers that refuse unroutable messages take `order_shipped`).
async fn start(bus: &TestBus) -> Service {
    bus.subscriber()
        .ensure_subscription(&Subscription::new(
            "notifications",
            ["events.order_shipped"],
        ))
        .await
        .expect("declare downstream");
    Service::start(bus.publisher(), bus.subscriber())
        .await
        .expect("start")
}

fn order(id: &str, total_cents: u64) -> OrderPlaced {
    OrderPlaced {
        order_id: id.into(),
        total_cents,
    }
}

#[tokio::test]
async fn a_placed_order_is_paid_packed_and_shipped() {
    let Some(bus) = bus().await else { return };
    let service = start(&bus).await;
    bus.events()
        .publish_typed(&order("o-1", 1250), Some("o-1"))
        .await
        .expect("publish");

    bus.run_until_idle(QUIET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert_published!(bus, PaymentTaken, |p| p.cents == 1250);
    assert_published!(bus, OrderPacked, count = 1);
    assert_eq!(
        bus.published::<OrderShipped>().into_vec(),
        vec![OrderShipped {
            order_id: "o-1".into()
        }]
    );
    assert_eq!(bus.handled::<OrderPacked>().count(), 1);
    assert!(bus.dead_lettered().is_empty(), "{}", bus.traffic());
    service.shutdown().await;
    bus.close().await.expect("close");
}

#[tokio::test]
async fn an_empty_order_is_dead_lettered_and_nothing_ships() {
    let Some(bus) = bus().await else { return };
    let service = start(&bus).await;
    bus.events()
        .publish_typed(&order("o-empty", 0), Some("o-empty"))
        .await
        .expect("publish");
    bus.events()
        .publish_typed(&order("o-2", 300), Some("o-2"))
        .await
        .expect("publish");

    bus.run_until_idle(QUIET)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    assert_dead_lettered!(bus, OrderPlaced, EMPTY_ORDER);
    let dead = bus.dead_lettered().of::<OrderPlaced>().into_vec();
    assert_eq!(dead, vec![order("o-empty", 0)]);
    assert_published!(bus, OrderShipped, |s| s.order_id == "o-2");
    assert_published!(bus, OrderShipped, count = 1);
    service.shutdown().await;
    bus.close().await.expect("close");
}
