//! Deduplication, in-progress acks, max_deliver and prompt redelivery against a real server.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_core::memory::MemoryInbox;
use longshore_core::{Broker, Consumer, Event, EventPublisher, Message, Subscription};
use longshore_core::{HEADER_DLQ_ATTEMPTS, HEADER_DLQ_REASON};
use longshore_testkit::runtime::OrderCreated;
use longshore_testkit::{drain_ids, expect_quiet, recv, within, Names};

/// Messages stored on `subject` in the test stream.
async fn stored(broker: &longshore_nats::NatsBroker, topic: &str) -> u64 {
    let subject = format!("lstest.{topic}");
    let stream = broker
        .jetstream()
        .get_stream("LONGSHORE_TEST")
        .await
        .expect("stream");
    let info = stream
        .info_with_subjects(&subject)
        .await
        .expect("stream info");
    let mut total = 0;
    let mut info = info;
    while let Some(Ok((_, n))) = info.next().await {
        total += n as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_twice_is_stored_once() {
    let Some(broker) = common::broker_with(common::config()).await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("dedup");
    let sub = Subscription::new(n.sub("dedup"), [topic.clone()]);
    let subscriber = broker.subscriber();
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let publisher = broker.publisher();
    let m = Message::new(&b"once"[..]);
    publisher.publish(&topic, m.clone()).await.expect("first");
    publisher
        .publish(&topic, m.clone())
        .await
        .expect("duplicate counts as success");
    // In a batch too.
    let other = Message::new(&b"batch"[..]);
    publisher
        .publish_batch(&topic, vec![other.clone(), other.clone(), m.clone()])
        .await
        .expect("batch with duplicates");
    assert_eq!(stored(&broker, &topic).await, 2, "one stored per id");
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let mut got = drain_ids(&mut stream, 2).await;
    got.sort();
    let mut want = vec![m.id, other.id];
    want.sort();
    assert_eq!(got, want);
    expect_quiet(&mut stream, "a duplicate was delivered").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_handler_keeps_its_message_with_in_progress_acks() {
    let mut config = common::config();
    config.ack_wait = Duration::from_secs(1);
    let Some(broker) = common::broker_with(config).await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("slow");
    let sub = Subscription::new(n.sub("slow"), [topic.clone()]).with_prefetch(1);
    let subscriber = broker.subscriber();
    let mut a = subscriber.subscribe(&sub).await.expect("subscribe a");
    let mut b = broker
        .subscriber()
        .subscribe(&sub)
        .await
        .expect("subscribe b");
    let m = Message::new(&b"slow"[..]);
    broker
        .publisher()
        .publish(&topic, m.clone())
        .await
        .expect("publish");
    let (d, mut other) = tokio::select! {
        d = a.next() => (d.expect("a").expect("a ok"), b),
        d = b.next() => (d.expect("b").expect("b ok"), a),
    };
    assert_eq!(d.message().id, m.id);
    // Four times ack_wait: without in-progress acks the other consumer would get it.
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(4), other.next()).await {
        panic!(
            "redelivered while still being handled: {:?}",
            item.map(|d| d.message().id.clone())
        );
    }
    d.ack().await.expect("ack");
    expect_quiet(&mut other, "acked message came back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_deliver_goes_to_the_dead_letters() {
    let mut config = common::config();
    config.max_deliver = Some(2);
    let Some(broker) = common::broker_with(config).await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("poison");
    let name = n.sub("poison");
    let subscriber = broker.subscriber();
    let mut stream = subscriber
        .subscribe(&Subscription::new(name.clone(), [topic.clone()]))
        .await
        .expect("subscribe");
    let m = Message::new(&b"poison"[..]);
    broker
        .publisher()
        .publish(&topic, m.clone())
        .await
        .expect("publish");
    for attempt in 1..=2 {
        let d = recv(&mut stream).await;
        assert_eq!(d.attempt, attempt);
        d.nack(None).await.expect("nack");
    }
    expect_quiet(&mut stream, "delivered beyond max_deliver").await;
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("dlq");
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message().id, m.id);
    assert_eq!(dead.message().headers[HEADER_DLQ_ATTEMPTS], "3");
    assert!(dead.message().headers[HEADER_DLQ_REASON].contains("max_deliver"));
    dead.ack().await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_delivery_comes_back_promptly() {
    let Some(broker) = common::broker_with(common::config()).await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("drop");
    let subscriber = broker.subscriber();
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("drop"), [topic.clone()]))
        .await
        .expect("subscribe");
    broker
        .publisher()
        .publish(&topic, Message::new(&b"x"[..]))
        .await
        .expect("publish");
    let d = recv(&mut stream).await;
    let started = Instant::now();
    drop(d);
    let again = recv(&mut stream).await;
    assert_eq!(again.attempt, 2);
    // ack_wait is 30 s: coming back this fast means the drop nacked it.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    again.ack().await.expect("ack");
}

fn created(i: u64) -> Event {
    Event::from_typed(&OrderCreated {
        order_id: format!("o-{i}"),
        total_cents: 100 * i,
    })
    .expect("encode")
}

/// The runtime over a deduplicating broker: a republished event id is dropped by JetStream
/// before any inbox sees it, so every event is handled once and the inbox counts no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_dedup_drops_a_republished_id() {
    let Some(broker) = common::broker_with(common::config()).await else {
        return;
    };
    assert!(broker.capabilities().dedup_window);
    let n = Names::new();
    let topic = n.topic("inbox");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let consumer = Consumer::new(
        broker.subscriber(),
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
    let publisher = EventPublisher::new(broker.publisher());
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
