//! The conformance suite against a real nats-server with JetStream (`NATS_URL`).
//!
//! Every broker scenario runs as is. Of the runtime scenarios, `inbox_skips_duplicates`
//! publishes the same event id twice and expects the broker to deliver both copies (so that
//! the inbox drops the second). JetStream's duplicate window drops the second copy at publish
//! (this adapter declares `dedup_window: true`), so that scenario cannot hold here as
//! written; it is replaced by `inbox_with_broker_dedup` below, which checks the same flow
//! with the broker-side expectation, until the testkit branches on `dedup_window`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::factory;
use longshore_core::memory::MemoryInbox;
use longshore_core::{Consumer, Event, EventPublisher, Subscription};
use longshore_testkit::runtime::OrderCreated;
use longshore_testkit::{within, BrokerFactory, Names};

longshore_testkit::broker_conformance!(factory);

longshore_testkit::__paste_tests!(
    factory,
    runtime,
    runtime_conformance,
    typed_dispatch_by_event_type,
    retry_then_success,
    retries_exhausted_go_to_dlq,
    permanent_error_goes_to_dlq_at_once,
    poison_body_dead_lettered_consumer_continues,
    malformed_inputs_are_dead_lettered_with_reason,
    unknown_event_type_dead_lettered,
    unknown_event_type_acked_when_configured,
    continue_after_repeated_errors,
    graceful_shutdown_drains_in_flight,
    shutdown_deadline_acks_nothing_unfinished,
    event_stream_forwards_in_batches,
    concurrency_is_bounded
);

fn created(i: u64) -> Event {
    Event::from_typed(&OrderCreated {
        order_id: format!("o-{i}"),
        total_cents: 100 * i,
    })
    .expect("encode")
}

/// `inbox_skips_duplicates` with a broker that deduplicates: the duplicate never reaches the
/// consumer, every event is handled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_conformance_inbox_with_broker_dedup() {
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
