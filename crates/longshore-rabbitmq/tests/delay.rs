//! Delayed nacks on RabbitMQ wait in the broker's delay levels, not in the process: the
//! prefetch slot is free at once, the delay survives the consumer's connection, and the
//! message comes back to the subscription that nacked it only. Scheduled publishes go through
//! the same levels: they reach every matching subscription when due and never earlier, and one
//! nobody subscribed to is kept in `<exchange>.delay.unrouted`.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use longshore_core::{Broker, Message, Subscription, HEADER_DELIVER_AT};
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
    assert_eq!(first.message().id, a.id);
    let nacked = Instant::now();
    first
        .nack(Some(Duration::from_secs(2)))
        .await
        .expect("nack with delay");
    // With prefetch 1, `b` can only come if `a` no longer holds the slot.
    let second = recv(&mut stream).await;
    assert_eq!(
        second.message().id,
        b.id,
        "the delayed message came back first"
    );
    second.ack().await.expect("ack b");
    let again = recv(&mut stream).await;
    assert_eq!(again.message().id, a.id);
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
    assert_eq!(back.message(), &sent, "id, key, headers and payload");
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
    assert_eq!(other.message().id, sent.id);
    other.ack().await.expect("ack");
    // The event: the nacking subscription has its copy back.
    let back = recv(&mut nacks).await;
    assert_eq!(back.message().id, sent.id);
    assert_eq!(back.topic, topic);
    back.ack().await.expect("ack");
    // And the other subscription never gets a second one.
    expect_quiet(&mut acks, "a delayed copy reached another subscription").await;
    expect_quiet(&mut nacks, "a delayed message came back twice").await;
    broker.close().await.expect("close");
}

#[tokio::test]
async fn a_scheduled_publish_reaches_every_matching_subscription_when_due() {
    let Some(broker) = broker().await else {
        return;
    };
    assert!(broker.capabilities().native_schedule);
    let n = Names::new();
    let topic = n.topic("sched.created");
    let subscriber = broker.subscriber();
    let exact = Subscription::new(n.sub("exact"), [topic.clone()]);
    let wildcard = Subscription::new(n.sub("wildcard"), [format!("{}.#", n.prefix())]);
    let elsewhere = Subscription::new(n.sub("elsewhere"), [n.topic("other")]);
    let mut streams = Vec::new();
    for sub in [&exact, &wildcard] {
        streams.push(subscriber.subscribe(sub).await.expect("subscribe"));
    }
    let mut others = subscriber.subscribe(&elsewhere).await.expect("subscribe");
    let publisher = broker.publisher();
    let when = Utc::now() + chrono::Duration::milliseconds(1_500);
    let single = Message::new(&b"{\"at\":1}"[..])
        .with_key("order-7")
        .with_header("tenant", "acme");
    publisher
        .publish_at(&topic, single.clone(), when)
        .await
        .expect("publish_at");
    // The batch path: one scheduled message beside an immediate one.
    let batched = Message::new("batched").deliver_at(when);
    let now = Message::new("now");
    publisher
        .publish_batch(&topic, vec![batched.clone(), now.clone()])
        .await
        .expect("publish_batch");

    for stream in &mut streams {
        // Published last, delivered first: nothing scheduled was handed out before it.
        let first = recv(stream).await;
        assert_eq!(first.message().id, now.id, "a scheduled message came early");
        first.ack().await.expect("ack");
        let mut due = Vec::new();
        for _ in 0..2 {
            let d = recv(stream).await;
            let seen = Utc::now();
            assert!(seen >= when, "delivered at {seen}, before its time {when}");
            assert_eq!(d.topic, topic);
            assert_eq!(d.attempt, 1);
            due.push(d.message().clone());
            d.ack().await.expect("ack");
        }
        due.sort_by_key(|m| m.id != single.id);
        let sent = single.clone().deliver_at(when);
        assert_eq!(
            due[0], sent,
            "id, key, headers (x-deliver-at kept), payload"
        );
        assert_eq!(due[1].id, batched.id);
        assert!(due[1].headers.contains_key(HEADER_DELIVER_AT));
    }
    for stream in &mut streams {
        expect_quiet(stream, "a scheduled message delivered twice").await;
    }
    expect_quiet(
        &mut others,
        "a scheduled message reached a subscription it does not match",
    )
    .await;
    broker.close().await.expect("close");
}

#[tokio::test]
async fn a_scheduled_message_nobody_subscribed_to_is_kept_when_due() {
    use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
    let Some(broker) = broker().await else {
        return;
    };
    let n = Names::new();
    let sent = Message::new("orphan");
    let when = Utc::now() + chrono::Duration::milliseconds(300);
    // Routable at publish (the delay levels take it) although no subscription matches.
    broker
        .publisher()
        .publish_at(&n.topic("nobody"), sent.clone(), when)
        .await
        .expect("publish_at");
    broker.close().await.expect("close");

    let url = common::amqp_url();
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    let queue = format!("{}.delay.unrouted", longshore_rabbitmq::DEFAULT_EXCHANGE);
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        assert!(Instant::now() < deadline, "not kept in {queue}");
        let got = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .expect("basic.get");
        let Some(message) = got else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let id = message
            .properties
            .message_id()
            .as_ref()
            .map(|i| i.to_string());
        if id.as_deref() == Some(sent.id.as_str()) {
            message.ack(BasicAckOptions::default()).await.expect("ack");
            break message;
        }
        // Another run's: leave it for whoever looks.
        message
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .expect("nack");
    };
    assert!(Utc::now() >= when);
    assert_eq!(&found.data[..], b"orphan");
    let _ = conn.close(200, "OK".into()).await;
}
