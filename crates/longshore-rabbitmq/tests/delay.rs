//! Delayed nacks on RabbitMQ wait in the broker's delay levels, not in the process: the
//! prefetch slot is free at once, the delay survives the consumer's connection, and the
//! message comes back to the subscription that nacked it only.

mod common;

use std::time::{Duration, Instant};

use longshore_core::{Broker, Message, Subscription};
use longshore_rabbitmq::RabbitBroker;
use longshore_testkit::{expect_quiet, recv, Names};

/// How much earlier than its delay a message may come back without failing the test: the
/// broker's timers and the clocks of two processes are not exact.
const MARGIN: Duration = Duration::from_millis(150);

async fn broker() -> Option<RabbitBroker> {
    common::broker_with(|c| c).await
}

#[tokio::test]
async fn a_delayed_nack_frees_the_prefetch_slot() {
    let Some(broker) = broker().await else {
        return;
    };
    assert!(broker.capabilities().native_delay);
    let n = Names::new();
    let topic = n.topic("slot");
    let sub = Subscription::new(n.sub("slot"), [topic.clone()]).with_prefetch(1);
    let mut stream = broker
        .subscriber()
        .subscribe(&sub)
        .await
        .expect("subscribe");
    let (a, b) = (Message::new("a"), Message::new("b"));
    let publisher = broker.publisher();
    publisher.publish(&topic, a.clone()).await.expect("a");
    publisher.publish(&topic, b.clone()).await.expect("b");

    let first = recv(&mut stream).await;
    assert_eq!(first.message.id, a.id);
    let nacked = Instant::now();
    first
        .nack(Some(Duration::from_secs(2)))
        .await
        .expect("nack with delay");
    // With prefetch 1, `b` can only come if `a` no longer holds the slot.
    let second = recv(&mut stream).await;
    assert_eq!(
        second.message.id, b.id,
        "the delayed message came back first"
    );
    second.ack().await.expect("ack b");
    let again = recv(&mut stream).await;
    assert_eq!(again.message.id, a.id);
    assert!(
        nacked.elapsed() >= Duration::from_secs(2) - MARGIN,
        "back after {:?}",
        nacked.elapsed()
    );
    assert_eq!(again.attempt, 2);
    again.ack().await.expect("ack a");
    broker.close().await.expect("close");
}

#[tokio::test]
async fn the_delay_survives_the_consumers_connection() {
    let Some(first) = broker().await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("durable");
    let sub = Subscription::new(n.sub("durable"), [topic.clone()]);
    let mut stream = first.subscriber().subscribe(&sub).await.expect("subscribe");
    let sent = Message::new(&b"{\"order\":42}"[..])
        .with_key("order-42")
        .with_header("content-type", "application/json")
        .with_header("tenant", "acme");
    first
        .publisher()
        .publish(&topic, sent.clone())
        .await
        .expect("publish");
    let d = recv(&mut stream).await;
    assert_eq!(d.attempt, 1);
    let delay = Duration::from_secs(1);
    let nacked = Instant::now();
    d.nack(Some(delay)).await.expect("nack with delay");
    // The whole connection goes: nothing of the delay is left in this process.
    first.close().await.expect("close");
    drop(stream);

    let Some(second) = broker().await else {
        return;
    };
    let mut stream = second.subscriber().subscribe(&sub).await.expect("again");
    let back = recv(&mut stream).await;
    assert!(
        nacked.elapsed() >= delay - MARGIN,
        "back after {:?}",
        nacked.elapsed()
    );
    assert_eq!(back.message, sent, "id, key, headers and payload");
    assert_eq!(back.topic, topic);
    assert_eq!(back.attempt, 2);
    back.ack().await.expect("ack");
    expect_quiet(&mut stream, "a delayed message came back twice").await;
    second.close().await.expect("close");
}

#[tokio::test]
async fn only_the_nacking_subscription_gets_it_back() {
    let Some(broker) = broker().await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("fanout");
    let subscriber = broker.subscriber();
    let nacking = Subscription::new(n.sub("nacking"), [topic.clone()]);
    let acking = Subscription::new(n.sub("acking"), [topic.clone()]);
    let mut nacks = subscriber.subscribe(&nacking).await.expect("nacking");
    let mut acks = subscriber.subscribe(&acking).await.expect("acking");
    let sent = Message::new("once");
    broker
        .publisher()
        .publish(&topic, sent.clone())
        .await
        .expect("publish");

    let d = recv(&mut nacks).await;
    d.nack(Some(Duration::from_millis(300)))
        .await
        .expect("nack with delay");
    let other = recv(&mut acks).await;
    assert_eq!(other.message.id, sent.id);
    other.ack().await.expect("ack");
    // The event: the nacking subscription has its copy back.
    let back = recv(&mut nacks).await;
    assert_eq!(back.message.id, sent.id);
    assert_eq!(back.topic, topic);
    back.ack().await.expect("ack");
    // And the other subscription never gets a second one.
    expect_quiet(&mut acks, "a delayed copy reached another subscription").await;
    expect_quiet(&mut nacks, "a delayed message came back twice").await;
    broker.close().await.expect("close");
}
