//! `health()` and `lag()` against the real broker: lag is the number of ready messages in the
//! subscription's queue, health follows the connection and the exchanges.

mod common;

use lapin::options::ExchangeDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use longshore_core::{Broker, Error, Subscription};
use longshore_testkit::{lag_reaches, message, recv, recv_n, Names};

#[tokio::test]
async fn lag_counts_ready_messages_until_they_are_delivered() {
    let Some(broker) = common::broker_with(|c| c).await else {
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
    lag_reaches(&*subscriber, &sub.name, 7).await;

    let mut stream = subscriber
        .subscribe(&sub.clone().with_prefetch(10))
        .await
        .expect("subscribe");
    let deliveries = recv_n(&mut stream, 7).await;
    // Delivered and not yet acknowledged: no longer ready, so not counted (documented).
    lag_reaches(&*subscriber, &sub.name, 0).await;
    for d in deliveries {
        d.ack().await.expect("ack");
    }
    lag_reaches(&*subscriber, &sub.name, 0).await;

    publisher
        .publish(&topic, message(8))
        .await
        .expect("publish");
    let unsettled = recv(&mut stream).await;
    drop(unsettled);
    drop(stream);
    // The unacknowledged delivery goes back to the queue when its consumer is gone.
    lag_reaches(&*subscriber, &sub.name, 1).await;
}

#[tokio::test]
async fn lag_of_an_unknown_subscription_is_a_typed_error() {
    let Some(broker) = common::broker_with(|c| c).await else {
        return;
    };
    let subscriber = broker.subscriber();
    let name = Names::new().sub("never-declared");
    match subscriber.lag(&name).await {
        Err(Error::InvalidName { kind, value, .. }) => {
            assert_eq!((kind, value.as_str()), ("subscription", name.as_str()))
        }
        other => panic!("expected InvalidName, got {other:?}"),
    }
    // The failed passive declaration closed only its own channel.
    let health = subscriber.health().await;
    assert!(health.is_ready(), "{health:?}");
}

#[tokio::test]
async fn health_is_ready_until_each_handle_is_closed() {
    let Some(broker) = common::broker_with(|c| c).await else {
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
        assert_eq!(health.backend, "rabbitmq");
        assert_eq!(health.detail, None);
    }

    publisher.close().await.expect("close publisher");
    let health = publisher.health().await;
    assert!(!health.is_ready(), "closed publisher: {health:?}");
    assert!(subscriber.health().await.is_ready(), "others keep going");

    subscriber.close().await.expect("close subscriber");
    let health = subscriber.health().await;
    assert!(!health.is_ready(), "closed subscriber: {health:?}");
    assert!(broker.health().await.is_ready());

    let other = broker.publisher();
    broker.close().await.expect("close broker");
    for health in [broker.health().await, other.health().await] {
        assert!(!health.connected && !health.is_ready(), "{health:?}");
        assert!(health.detail.is_some_and(|d| d.contains("closed")));
    }
    assert!(matches!(
        broker.subscriber().lag("anything").await,
        Err(Error::Closed(_))
    ));
}

#[tokio::test]
async fn health_reports_a_missing_exchange() {
    let n = Names::new();
    let exchange = format!("{}-exchange", n.prefix());
    let exchange_name = exchange.clone();
    let Some(broker) = common::broker_with(move |c| c.with_exchange(exchange_name)).await else {
        return;
    };
    assert!(broker.health().await.is_ready());
    let raw = Connection::connect(&common::amqp_url(), ConnectionProperties::default())
        .await
        .expect("raw connection");
    let channel = raw.create_channel().await.expect("channel");
    channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .expect("delete exchange");

    let health = broker.publisher().health().await;
    assert!(health.connected, "{health:?}");
    assert!(
        !health.topology_declared && !health.is_ready(),
        "{health:?}"
    );
    let detail = health.detail.unwrap_or_default();
    assert!(detail.contains(&exchange), "names the exchange: {detail}");
    assert!(!detail.contains("guest:guest"), "no credentials: {detail}");
    let _ = raw.close(200, "OK".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reopens_a_connection_the_broker_closed() {
    let connection_name = format!("longshore-health-{}", uuid::Uuid::new_v4().simple());
    let name = connection_name.clone();
    let Some(broker) = common::broker_with(move |mut c| {
        c.connection_name = name;
        c
    })
    .await
    else {
        return;
    };
    let closed = match common::close_connections(connection_name).await {
        Ok(closed) => closed,
        Err(e) => {
            assert!(!common::ci(), "rabbitmqctl is required under CI: {e}");
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    assert!(closed >= 1, "the broker handle's connection was listed");
    longshore_testkit::eventually("the client to see the close", || !broker.is_connected()).await;

    let subscriber = broker.subscriber();
    let health = subscriber.health().await;
    assert!(
        health.is_ready(),
        "re-opened by the health check: {health:?}"
    );
    assert!(broker.is_connected());
    assert_eq!(broker.reconnects(), 1);
}
