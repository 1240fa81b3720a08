//! The conformance suite against a real nats-server with JetStream (`NATS_URL`).
//!
//! The whole suite runs as is. `jetstream_dedup_drops_a_republished_id` below adds the
//! JetStream side of duplicates: the broker's dedup window drops a republished id before any
//! inbox sees it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::factory;
use longshore_core::memory::MemoryInbox;
use longshore_core::{Consumer, Event, EventPublisher, Subscription};
use longshore_testkit::runtime::OrderCreated;
use longshore_testkit::{within, BrokerFactory, Names};

longshore_testkit::broker_conformance!(factory);

longshore_testkit::runtime_conformance!(factory);

fn created(i: u64) -> Event {
    Event::from_typed(&OrderCreated {
        order_id: format!("o-{i}"),
        total_cents: 100 * i,
    })
    .expect("encode")
}

/// With a broker that deduplicates, the duplicate never reaches the
/// consumer, every event is handled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_dedup_drops_a_republished_id() {
    let Some(f) = factory().await else { return };
    assert!(f.publisher().await.capabilities().dedup_window);
    let n = Names::new();
    let topic = n.topic("inbox");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let consumer = Consumer::new(
        f.subscriber().await,
        Subscription::new(n.sub("inbox"), [topic.clone()]),
    )
    .concurrency(1)
    .inbox(Arc::new(MemoryInbox::new(1000)))
    .on(move |e: OrderCreated, _| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(e.order_id);
            Ok(())
        }
    })
    .start()
    .await
    .expect("start");
    let publisher = EventPublisher::new(f.publisher().await);
    let dup = created(1);
    publisher.publish_to(&topic, &dup).await.expect("publish");
    publisher
        .publish_to(&topic, &dup)
        .await
        .expect("publish duplicate");
    publisher
        .publish_to(&topic, &created(2))
        .await
        .expect("publish");
    assert_eq!(within("first", rx.recv()).await.as_deref(), Some("o-1"));
    assert_eq!(within("second", rx.recv()).await.as_deref(), Some("o-2"));
    let stats = consumer.shutdown(Duration::from_secs(10)).await;
    assert_eq!((stats.acked, stats.duplicates), (2, 0));
    assert!(rx.try_recv().is_err(), "duplicate was handled twice");
}
