//! Health and lag against the broker at `KAFKA_BROKERS` (lag counting itself is the
//! conformance scenario `lag_counts_waiting_messages`).

mod common;

use longshore_core::{Broker, Error, Subscription};
use longshore_kafka::KafkaBroker;
use longshore_testkit::{message, Names};

async fn broker() -> Option<KafkaBroker> {
    common::connect_with(common::config()).await
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
