//! `health()` and `lag()` against the real server: lag is the durable's pending plus
//! unacknowledged messages, health follows the connection and the stream.

mod common;

use std::time::Duration;

use async_nats::jetstream::stream;
use longshore_core::{Broker, Error, Subscription};
use longshore_testkit::{lag_reaches, message, recv_n, Names};

#[tokio::test]
async fn lag_counts_pending_and_unacknowledged_messages() {
    let Some(broker) = common::broker_with(common::config()).await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("lag");
    let sub = Subscription::new(n.sub("lag"), [topic.clone()]);
    let subscriber = broker.subscriber();
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    assert_eq!(subscriber.lag(&sub.name).await.expect("lag"), Some(0));

    let publisher = broker.publisher();
    publisher
        .publish_batch(&topic, (0..7).map(message).collect())
        .await
        .expect("publish");
    lag_reaches(subscriber.as_ref(), &sub.name, 7).await;

    let mut stream = subscriber
        .subscribe(&sub.clone().with_prefetch(10))
        .await
        .expect("subscribe");
    let deliveries = recv_n(&mut stream, 7).await;
    // Delivered, not acknowledged: still counted (num_ack_pending).
    lag_reaches(subscriber.as_ref(), &sub.name, 7).await;
    for (i, d) in deliveries.into_iter().enumerate() {
        d.ack().await.expect("ack");
        if i == 2 {
            lag_reaches(subscriber.as_ref(), &sub.name, 4).await;
        }
    }
    lag_reaches(subscriber.as_ref(), &sub.name, 0).await;
}

#[tokio::test]
async fn health_is_ready_until_each_handle_is_closed() {
    let Some(broker) = common::broker_with(common::config()).await else {
        return;
    };
    let publisher = broker.publisher();
    let subscriber = broker.subscriber();
    for health in [
        broker.health().await,
        publisher.health().await,
        subscriber.health().await,
    ] {
        assert!(health.is_ready(), "{health:?}");
        assert_eq!(health.backend, "nats");
        assert_eq!(health.detail, None);
    }

    publisher.close().await.expect("close publisher");
    let health = publisher.health().await;
    assert!(!health.is_ready(), "closed publisher: {health:?}");
    assert!(subscriber.health().await.is_ready(), "others keep going");

    subscriber.close().await.expect("close subscriber");
    let health = subscriber.health().await;
    assert!(!health.is_ready(), "closed subscriber: {health:?}");
    assert!(health.detail.is_some_and(|d| d.contains("closed")));
    assert!(matches!(
        subscriber.lag("anything").await,
        Err(Error::Closed(_))
    ));
    assert!(broker.health().await.is_ready());
}

/// A configuration with a stream and subject prefix of its own, so that deleting or
/// replacing the stream disturbs no other test.
fn own_stream(n: &Names) -> longshore_nats::NatsConfig {
    let mut config = common::config();
    config.stream = format!("LSHEALTH_{}", n.prefix());
    config.subject_prefix = format!("lshealth{}", n.prefix());
    config
}

#[tokio::test]
async fn health_recreates_a_deleted_stream() {
    let n = Names::new();
    let config = own_stream(&n);
    let name = config.stream.clone();
    let Some(broker) = common::broker_with(config).await else {
        return;
    };
    let js = broker.jetstream().clone();
    assert!(broker.health().await.is_ready(), "creates the stream");
    js.get_stream(&name).await.expect("stream exists");

    js.delete_stream(&name).await.expect("delete stream");
    let health = broker.publisher().health().await;
    assert!(health.is_ready(), "re-created: {health:?}");
    js.get_stream(&name).await.expect("stream exists again");
    js.delete_stream(&name).await.expect("clean up");
}

#[tokio::test]
async fn health_reports_a_stream_that_misses_our_subjects() {
    let n = Names::new();
    let config = own_stream(&n);
    let name = config.stream.clone();
    let wanted = format!("{}.>", config.subject_prefix);
    let Some(broker) = common::broker_with(config).await else {
        return;
    };
    let js = broker.jetstream().clone();
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("other{}.>", n.prefix())],
        max_age: Duration::from_secs(600),
        ..Default::default()
    })
    .await
    .expect("create a foreign stream");

    let health = broker.subscriber().health().await;
    js.delete_stream(&name).await.expect("clean up");
    assert!(health.connected, "{health:?}");
    assert!(
        !health.topology_declared && !health.is_ready(),
        "{health:?}"
    );
    let detail = health.detail.unwrap_or_default();
    assert!(
        detail.contains(&name) && detail.contains(&wanted),
        "names the stream and the subject: {detail}"
    );
}
