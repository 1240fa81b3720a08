//! Health and lag of the Postgres queue against the server at `DATABASE_URL`.

mod common;

use std::time::Duration;

use longshore_core::{Broker, Error, Subscription};
use longshore_postgres::{sqlx, PgBroker, PgConfig};
use longshore_testkit::{lag_reaches, message, recv_n, Names};

/// Lag counts the rows not acknowledged yet: published with no consumer, still counted while
/// leased to a consumer, gone once acked. Publishing commits before it returns, so those
/// answers are exact at once; an ack queues its delete (like a broker's ack, it is not
/// confirmed), so the count drops soon after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_unacknowledged_rows() {
    let Some(b) = common::broker().await else {
        return;
    };
    let n = Names::new();
    let (publisher, subscriber) = (b.publisher(), b.subscriber());
    let sub = Subscription::new(n.sub("lag"), [n.topic("orders.#")]).with_prefetch(16);
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    assert_eq!(subscriber.lag(&sub.name).await.expect("lag"), Some(0));

    const N: usize = 7;
    publisher
        .publish_batch(&n.topic("orders.created"), (0..N).map(message).collect())
        .await
        .expect("publish");
    assert_eq!(
        subscriber.lag(&sub.name).await.expect("lag"),
        Some(N as u64)
    );
    // Another subscription's rows do not count.
    let other = Subscription::new(n.sub("other"), [n.topic("other")]);
    subscriber
        .ensure_subscription(&other)
        .await
        .expect("ensure");
    publisher
        .publish(&n.topic("other"), message(99))
        .await
        .expect("publish");
    assert_eq!(
        subscriber.lag(&sub.name).await.expect("lag"),
        Some(N as u64)
    );

    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let mut held = recv_n(&mut stream, N).await;
    assert_eq!(
        subscriber.lag(&sub.name).await.expect("lag"),
        Some(N as u64),
        "leased, unacknowledged rows still count"
    );
    for d in held.drain(..3) {
        d.ack().await.expect("ack");
    }
    lag_reaches(subscriber.as_ref(), &sub.name, N as u64 - 3).await;
    for d in held {
        d.ack().await.expect("ack");
    }
    // Closing the subscriber waits for its queued deletes: the count is exact again at once
    // (a process that exits after closing does not get these messages again).
    subscriber.close().await.expect("close");
    let subscriber = b.subscriber();
    assert_eq!(
        subscriber.lag(&sub.name).await.expect("lag"),
        Some(0),
        "acks written by the time close returned"
    );
    assert_eq!(subscriber.lag(&other.name).await.expect("lag"), Some(1));
    // A subscription that does not exist is a typed error.
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
        ),
        "{e:?}"
    );
    subscriber.close().await.expect("close");
}

/// Broker, publisher and subscriber are ready while connected; closed handles are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_ready_while_connected_and_not_after_close() {
    let Some(b) = common::broker().await else {
        return;
    };
    let (publisher, subscriber) = (b.publisher(), b.subscriber());
    for h in [
        b.health().await,
        publisher.health().await,
        subscriber.health().await,
    ] {
        assert!(h.is_ready() && h.detail.is_none(), "{h:?}");
        assert_eq!(h.backend, "postgres");
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
    assert!(b.health().await.is_ready(), "the broker is still connected");
}

/// A schema that was never migrated: connected, topology not declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmigrated_schema_is_connected_but_not_ready() {
    let Some(b) = common::broker().await else {
        return;
    };
    let mut config = common::config(&common::fresh_schema());
    config.migrate = false;
    let unmigrated = PgBroker::from_pool(b.pool().clone(), config)
        .await
        .expect("broker without migrating");
    let h = unmigrated.publisher().health().await;
    assert!(
        h.connected && !h.topology_declared && !h.is_ready(),
        "{h:?}"
    );
    assert!(
        h.detail.as_deref().is_some_and(|d| d.contains("migrat")),
        "{h:?}"
    );
}

/// A server that does not answer: not connected, and the detail names the server without the
/// password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_not_connected_and_hides_the_password() {
    let url = "postgres://app:s3cret-pw@127.0.0.1:1/test";
    let mut config = PgConfig::from_url(url).expect("url");
    config.migrate = false;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy_with(config.connect_options().expect("options"));
    let b = PgBroker::from_pool(pool, config)
        .await
        .expect("a lazy pool connects later");
    for h in [b.health().await, b.subscriber().health().await] {
        assert!(!h.connected && !h.is_ready(), "{h:?}");
        let shown = format!("{h:?}");
        assert!(shown.contains("127.0.0.1:1"), "{shown}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
    }
}
