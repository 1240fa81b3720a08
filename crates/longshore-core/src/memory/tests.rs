//! The memory broker's batching and parking: what the conformance suite does not reach.

use std::time::Duration;

use futures::StreamExt;

use super::{MemoryBroker, MemoryConfig};
use crate::broker::Broker;
use crate::error::Error;
use crate::message::Message;
use crate::subscriber::Subscription;

fn broker(max_queue_depth: usize) -> MemoryBroker {
    MemoryBroker::new(MemoryConfig {
        max_queue_depth,
        publish_timeout: Duration::from_secs(1),
        ..MemoryConfig::default()
    })
}

fn numbered(n: usize) -> Vec<Message> {
    (0..n).map(|i| Message::new(format!("{i}"))).collect()
}

#[tokio::test(start_paused = true)]
async fn a_batch_into_a_full_queue_returns_only_what_did_not_fit() {
    let broker = broker(5);
    let subscriber = broker.subscriber();
    subscriber
        .ensure_subscription(&Subscription::new("full", ["t"]))
        .await
        .expect("ensure");
    let batch = numbered(8);
    let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
    let err = broker
        .publisher()
        .publish_batch("t", batch)
        .await
        .expect_err("three do not fit");
    assert_eq!(err.total, 8);
    let failed: Vec<usize> = err.failed.iter().map(|f| f.index).collect();
    assert_eq!(failed, vec![5, 6, 7]);
    for f in &err.failed {
        assert_eq!(
            f.message.id, ids[f.index],
            "the caller gets its message back"
        );
        assert!(
            matches!(f.error, Error::Backpressure { .. }),
            "{:?}",
            f.error
        );
    }
    assert_eq!(broker.depth("full"), 5);
}

#[tokio::test]
async fn a_fanned_out_batch_reaches_every_subscription_complete_and_in_order() {
    let broker = MemoryBroker::default();
    let subscriber = broker.subscriber();
    // Larger than one run under the lock, so the batch is queued in several.
    let batch = numbered(1000);
    let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
    let mut a = subscriber
        .subscribe(&Subscription::new("a", ["orders.*"]).with_prefetch(1000))
        .await
        .expect("subscribe");
    let mut b = subscriber
        .subscribe(&Subscription::new("b", ["orders.#"]).with_prefetch(1000))
        .await
        .expect("subscribe");
    broker
        .publisher()
        .publish_batch("orders.created", batch)
        .await
        .expect("batch");
    for stream in [&mut a, &mut b] {
        for id in &ids {
            let d = stream.next().await.expect("open").expect("delivery");
            assert_eq!(&d.message().id, id);
            assert_eq!(d.topic, "orders.created");
            d.ack().await.expect("ack");
        }
    }
}

#[tokio::test]
async fn a_cancelled_publish_does_not_swallow_the_next_wakeup() {
    let broker = broker(1);
    let subscriber = broker.subscriber();
    let sub = Subscription::new("one", ["t"]).with_prefetch(1);
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let publisher = broker.publisher();
    publisher
        .publish("t", Message::new("first"))
        .await
        .expect("room");
    // Parks on the full queue, then is cancelled while parked.
    let cancelled = tokio::spawn({
        let publisher = publisher.clone();
        async move { publisher.publish("t", Message::new("cancelled")).await }
    });
    tokio::task::yield_now().await;
    cancelled.abort();
    assert!(cancelled.await.is_err(), "aborted");
    let waiting = tokio::spawn({
        let publisher = publisher.clone();
        async move { publisher.publish("t", Message::new("second")).await }
    });
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let d = stream.next().await.expect("open").expect("delivery");
    assert_eq!(&d.message().payload[..], b"first");
    d.ack().await.expect("ack");
    waiting
        .await
        .expect("task")
        .expect("woken once there was room");
    let d = stream.next().await.expect("open").expect("delivery");
    assert_eq!(&d.message().payload[..], b"second");
    d.ack().await.expect("ack");
}

#[tokio::test]
async fn a_consumer_dropped_while_parked_leaves_the_next_one_wakeable() {
    let broker = MemoryBroker::default();
    let subscriber = broker.subscriber();
    let sub = Subscription::new("q", ["t"]);
    let mut gone = subscriber.subscribe(&sub).await.expect("subscribe");
    // Parks on the empty queue, then goes away.
    assert!(futures::poll!(gone.next()).is_pending());
    drop(gone);
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let next = tokio::spawn(async move {
        let d = stream.next().await.expect("open").expect("delivery");
        let payload = d.message().payload.clone();
        d.ack().await.expect("ack");
        payload
    });
    broker
        .publisher()
        .publish("t", Message::new("hello"))
        .await
        .expect("publish");
    assert_eq!(&next.await.expect("task")[..], b"hello");
}

#[tokio::test]
async fn a_drained_backlog_gives_its_buffer_back() {
    let broker = broker(100_000);
    let subscriber = broker.subscriber();
    let sub = Subscription::new("backlog", ["t"]).with_prefetch(1000);
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let publisher = broker.publisher();
    for _ in 0..50 {
        publisher
            .publish_batch("t", numbered(1000))
            .await
            .expect("batch");
    }
    let full = broker.buffer_capacity("backlog");
    assert!(full >= 50_000, "holds the backlog: {full}");
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    for _ in 0..50_000 {
        let d = stream.next().await.expect("open").expect("delivery");
        d.ack().await.expect("ack");
    }
    assert_eq!(broker.depth("backlog"), 0);
    let drained = broker.buffer_capacity("backlog");
    assert!(drained <= 8192, "kept {drained} slots after draining");
}

#[tokio::test]
async fn lag_counts_unacknowledged_messages_and_health_follows_close() {
    use futures::StreamExt;
    let broker = MemoryBroker::default();
    let (publisher, subscriber) = (broker.publisher(), broker.subscriber());
    let sub = Subscription::new("lagging", ["lag.#"]);
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    for _ in 0..3 {
        publisher
            .publish("lag.x", Message::new("m"))
            .await
            .expect("publish");
    }
    assert_eq!(subscriber.lag("lagging").await.expect("lag"), Some(3));
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let first = stream.next().await.expect("delivery").expect("ok");
    assert_eq!(subscriber.lag("lagging").await.expect("lag"), Some(3));
    first.ack().await.expect("ack");
    assert_eq!(subscriber.lag("lagging").await.expect("lag"), Some(2));
    assert!(matches!(
        subscriber.lag("nobody").await,
        Err(Error::InvalidName { .. })
    ));
    assert!(publisher.health().await.is_ready());
    assert!(subscriber.health().await.is_ready());
    publisher.close().await.expect("close");
    subscriber.close().await.expect("close");
    assert!(!publisher.health().await.is_ready());
    assert!(!subscriber.health().await.is_ready());
}

#[tokio::test]
async fn a_new_subscription_invalidates_cached_routes() {
    let broker = MemoryBroker::default();
    let publisher = broker.publisher();
    // Caches "no subscription" for the topic.
    publisher
        .publish("orders.created", Message::new("early"))
        .await
        .expect("publish");
    let subscriber = broker.subscriber();
    let mut first = subscriber
        .subscribe(&Subscription::new("a", ["orders.*"]))
        .await
        .expect("subscribe");
    publisher
        .publish("orders.created", Message::new("one"))
        .await
        .expect("publish");
    let d = first.next().await.expect("open").expect("delivery");
    assert_eq!(&d.message().payload[..], b"one");
    d.ack().await.expect("ack");
    // A second binding on the cached topic is seen too.
    let mut second = subscriber
        .subscribe(&Subscription::new("b", ["orders.#"]))
        .await
        .expect("subscribe");
    publisher
        .publish("orders.created", Message::new("two"))
        .await
        .expect("publish");
    for stream in [&mut first, &mut second] {
        let d = stream.next().await.expect("open").expect("delivery");
        assert_eq!(&d.message().payload[..], b"two");
        d.ack().await.expect("ack");
    }
}
