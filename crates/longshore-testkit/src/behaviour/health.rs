//! Health and lag: handles report ready while connected and not after close (saying why),
//! record activity, and `lag` counts what waits for a subscription.

use std::sync::Arc;

use longshore_core::observe::{observe_publisher, observe_subscriber};
use longshore_core::{Error, Health, Subscriber, Subscription};

use crate::fixture::skipped;
use crate::helpers::{drain_ids, lag_reaches, message, recv, within};
use crate::{Fixture, Scene};

/// Asserts `health` is not ready and its detail says the handle is closed.
fn assert_closed(health: Health, what: &str) {
    assert!(
        !health.is_ready(),
        "a closed {what} is not ready: {health:?}"
    );
    let detail = health.detail.unwrap_or_default();
    assert!(
        detail.contains("closed"),
        "the {what}'s detail says why: {detail}"
    );
}

/// `health()` of wrapped handles reports a ready backend and the last publish and ack.
pub async fn health_reports_activity(f: &Fixture) {
    let s = f.scene();
    let publisher = observe_publisher(s.publisher.clone());
    let subscriber: Arc<dyn Subscriber> = observe_subscriber(s.subscriber.clone());
    let before = publisher.health().await;
    assert!(
        before.is_ready(),
        "a connected publisher is ready: {before:?}"
    );
    let (topic, sub) = s.on("health");
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    publisher
        .publish(&topic, message(1))
        .await
        .expect("publish");
    let after = publisher.health().await;
    assert!(
        after.last_publish.is_some(),
        "last publish recorded: {after:?}"
    );
    recv(&mut stream).await.ack().await.expect("ack");
    let health = subscriber.health().await;
    assert!(
        health.is_ready(),
        "a consuming subscriber is ready: {health:?}"
    );
    assert!(health.last_ack.is_some(), "last ack recorded: {health:?}");
    assert_eq!(health.backend, publisher.capabilities().backend);

    drop(stream);
    publisher.close().await.expect("close");
    subscriber.close().await.expect("close");
    assert_closed(publisher.health().await, "publisher");
    assert_closed(subscriber.health().await, "subscriber");
}

/// The broker, a publisher and a subscriber of a connected backend are ready, name the
/// backend and give no detail, also after a publish to an ensured subscription.
pub async fn health_is_ready_when_connected(f: &Fixture) {
    let s = f.scene();
    let (topic, _) = s.ensured("ready").await;
    s.publish(&topic, message(1)).await;
    for (health, what) in [
        (f.broker().health().await, "broker"),
        (s.publisher.health().await, "publisher"),
        (s.subscriber.health().await, "subscriber"),
    ] {
        assert!(health.is_ready(), "a connected {what} is ready: {health:?}");
        assert_eq!(health.backend, f.backend(), "{what}");
        assert_eq!(health.detail, None, "a ready {what} has nothing to say");
    }
}

/// Closing a publisher or a subscriber makes that handle not ready; the other handles and
/// the broker keep going.
pub async fn closing_a_handle_leaves_the_others_ready(f: &Fixture) {
    let s = f.scene();
    s.publisher.close().await.expect("close publisher");
    assert_closed(s.publisher.health().await, "publisher");
    let health = s.subscriber.health().await;
    assert!(health.is_ready(), "the subscriber keeps going: {health:?}");
    s.subscriber.close().await.expect("close subscriber");
    assert_closed(s.subscriber.health().await, "subscriber");
    let health = f.broker().health().await;
    assert!(health.is_ready(), "the broker keeps going: {health:?}");
}

/// After [`longshore_core::Broker::close`], the broker and the handles made from it are not
/// ready, and publishing fails with a typed error instead of hanging or panicking.
pub async fn health_not_ready_after_close(f: &Fixture) {
    let s = f.scene();
    let (topic, _) = s.ensured("closing").await;
    f.broker().close().await.expect("close the broker");
    for (health, what) in [
        (f.broker().health().await, "broker"),
        (s.publisher.health().await, "publisher"),
        (s.subscriber.health().await, "subscriber"),
    ] {
        assert!(
            !health.is_ready(),
            "the {what} of a closed broker is not ready: {health:?}"
        );
    }
    let r = within(
        "publish on a closed broker to fail",
        s.publisher.publish(&topic, message(1)),
    )
    .await;
    assert!(r.is_err(), "publish on a closed broker: {r:?}");
}

/// `lag()` counts the messages waiting for a subscription and drops to zero once they are
/// acknowledged. Backends that cannot tell answer `None`.
pub async fn lag_counts_waiting_messages(f: &Fixture) {
    let s = f.scene();
    let Some((topic, sub)) = lag_reported(f, &s, "lag_counts_waiting_messages").await else {
        return;
    };
    // One by one: some Kafka-protocol brokers report batch watermarks loosely.
    for i in 0..5 {
        s.publish(&topic, message(i)).await;
    }
    lag_reaches(s.subscriber.as_ref(), &sub.name, 5).await;
    let mut stream = s.subscribe(&sub).await;
    drain_ids(&mut stream, 5).await;
    lag_reaches(s.subscriber.as_ref(), &sub.name, 0).await;
    assert_unknown_lag_is_invalid_name(&s.subscriber, &s.sub("nobody")).await;
}

/// Acks made just before the broker closes are kept: `close` lets the settlements already
/// handed to the broker reach it (a Postgres ack's queued delete, a JetStream ack, an AMQP
/// ack frame, a Kafka offset), so the lag another connection reads drops to zero and nothing
/// comes back. Backends that cannot tell lag skip it.
pub async fn acks_before_close_are_kept(f: &Fixture) {
    let s = f.scene();
    let Some((topic, sub)) = lag_reported(f, &s, "acks_before_close_are_kept").await else {
        return;
    };
    const N: usize = 20;
    // One by one: some Kafka-protocol brokers report batch watermarks loosely.
    for i in 0..N {
        s.publish(&topic, message(i)).await;
    }
    lag_reaches(s.subscriber.as_ref(), &sub.name, N as u64).await;
    let other = f.reconnect().await;
    let mut stream = other
        .subscriber()
        .subscribe(&sub.clone().with_prefetch(N as u16))
        .await
        .expect("subscribe");
    drain_ids(&mut stream, N).await;
    other.close().await.expect("close");
    drop(stream);
    lag_reaches(s.subscriber.as_ref(), &sub.name, 0).await;
}

/// `lag()` of a subscription nobody declared is `InvalidName` (kind `subscription`), which is
/// not worth retrying.
pub async fn lag_of_unknown_subscription_is_invalid_name(f: &Fixture) {
    let s = f.scene();
    if lag_reported(f, &s, "lag_of_unknown_subscription_is_invalid_name")
        .await
        .is_none()
    {
        return;
    }
    assert_unknown_lag_is_invalid_name(&s.subscriber, &s.sub("never")).await;
}

/// An ensured subscription and its topic, when the backend reports lag; otherwise `None`,
/// after printing why `scenario` skips.
async fn lag_reported(f: &Fixture, s: &Scene, scenario: &str) -> Option<(String, Subscription)> {
    let (topic, sub) = s.ensured("lag").await;
    if s.subscriber.lag(&sub.name).await.expect("lag").is_none() {
        skipped(scenario, &format!("{} does not report lag", f.backend()));
        return None;
    }
    Some((topic, sub))
}

async fn assert_unknown_lag_is_invalid_name(subscriber: &Arc<dyn Subscriber>, name: &str) {
    let unknown = subscriber.lag(name).await;
    assert!(
        matches!(
            &unknown,
            Err(e @ Error::InvalidName {
                kind: "subscription",
                ..
            }) if !e.is_retryable()
        ),
        "lag of an unknown subscription is InvalidName: {unknown:?}"
    );
}
