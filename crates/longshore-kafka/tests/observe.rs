//! Health and lag against the broker at `KAFKA_BROKERS`.

mod common;

use std::time::{Duration, Instant};

use longshore_core::{Error, Publisher, Subscriber, Subscription};
use longshore_kafka::{KafkaBroker, KafkaSubscriber};
use longshore_testkit::{message, recv_n, Names, WAIT};

async fn broker() -> Option<KafkaBroker> {
    common::connect_with(common::config()).await
}

/// Polls `lag` until it reports `want` (bounded by [`WAIT`]), failing with the last answer.
async fn await_lag(subscriber: &KafkaSubscriber, subscription: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let lag = subscriber.lag(subscription).await.expect("lag");
        if lag == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "lag of {subscription} is {lag:?} after {WAIT:?}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Lag is the number of records published to an ensured subscription's topic with no consumer
/// (the group has committed nothing yet), and drops to zero once everything is acked and
/// committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_unconsumed_records_then_zero_after_acks() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let (publisher, subscriber) = (b.publisher(), b.subscriber());
    let sub = Subscription::new(n.sub("lag"), [n.topic("#")]);
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    assert_eq!(subscriber.lag(&sub.name).await.expect("lag"), Some(0));

    const N: usize = 7;
    // One at a time, each awaited: tansu's high watermark (ListOffsets) is the last record
    // batch's base offset + 1, right only while every batch holds one record (README, tansu).
    for i in 0..N {
        publisher
            .publish(&n.topic("created"), message(i))
            .await
            .expect("publish");
    }
    await_lag(&subscriber, &sub.name, N as u64).await;

    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    for d in recv_n(&mut stream, N).await {
        d.ack().await.expect("ack");
    }
    // Acked offsets are committed by auto-commit (every `commit_interval`).
    await_lag(&subscriber, &sub.name, 0).await;

    subscriber.close().await.expect("close");
    publisher.close().await.expect("close");
}

/// `lag` of a subscription this subscriber never saw is a typed error (its Kafka topics are
/// unknown here); after `close` it is `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_of_an_unknown_subscription_is_an_error() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let subscriber = b.subscriber();
    let e = subscriber
        .lag(&n.sub("never"))
        .await
        .expect_err("unknown subscription");
    assert!(
        matches!(
            e,
            Error::InvalidName {
                kind: "subscription",
                ..
            }
        ) && !e.is_retryable(),
        "{e:?}"
    );
    subscriber.close().await.expect("close");
    assert!(matches!(
        subscriber.lag(&n.sub("never")).await,
        Err(Error::Closed(_))
    ));
}

/// Broker, publisher and subscriber are ready while connected; closed handles are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_ready_while_connected_and_not_after_close() {
    let Some(b) = broker().await else { return };
    let n = Names::new();
    let (publisher, subscriber) = (b.publisher(), b.subscriber());
    let broker_health = b.health().await;
    assert!(broker_health.is_ready(), "{broker_health:?}");
    assert_eq!(broker_health.backend, "kafka");

    let sub = Subscription::new(n.sub("health"), [n.topic("a")]);
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    publisher
        .publish(&n.topic("a"), message(1))
        .await
        .expect("publish");
    for h in [publisher.health().await, subscriber.health().await] {
        assert!(h.is_ready() && h.detail.is_none(), "{h:?}");
    }

    publisher.close().await.expect("close");
    subscriber.close().await.expect("close");
    for (h, what) in [
        (publisher.health().await, "publisher"),
        (subscriber.health().await, "subscriber"),
    ] {
        assert!(!h.is_ready() && !h.connected, "{h:?}");
        let detail = h.detail.unwrap_or_default();
        assert!(
            detail.contains(what) && detail.contains("closed"),
            "{detail}"
        );
    }
    // The broker handle itself is still connected.
    assert!(b.health().await.is_ready());
}
