//! Publishing: what is published arrives intact, complete and (per key) in order, from many
//! publishers and to many topics at once.

use std::collections::BTreeSet;

use longshore_core::Message;

use crate::helpers::{
    drain_ids, expect_quiet, ids_of, message, recv, recv_n, spawn_acking, within,
};
use crate::Fixture;

/// A message published after the subscription exists arrives with id, key, payload and
/// headers intact, and the topic it was published to.
pub async fn publish_then_subscribe_keeps_id_payload_headers_key(f: &Fixture) {
    let s = f.scene();
    let (topic, mut stream) = s.open("orders.created").await;
    let sent = Message::new(&b"{\"hello\":\"world\"}"[..])
        .with_key("order-42")
        .with_header("tenant", "acme")
        .with_header("unicode", "注文 ✓");
    s.publish(&topic, sent.clone()).await;
    let d = recv(&mut stream).await;
    assert_eq!(d.message().id, sent.id);
    assert_eq!(d.message().payload, sent.payload);
    assert_eq!(d.message().key.as_deref(), Some("order-42"));
    for (k, v) in &sent.headers {
        assert_eq!(d.message().headers.get(k), Some(v), "header {k}");
    }
    assert_eq!(d.topic, topic);
    assert_eq!(d.attempt, 1);
    d.ack().await.expect("ack");
}

/// A batch of 200 arrives complete and, for one key and one consumer, in order.
pub async fn batch_publish_keeps_order(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("batch");
    let mut stream = s.subscribe(&sub.with_prefetch(50)).await;
    let batch: Vec<Message> = (0..200).map(|i| message(i).with_key("one-key")).collect();
    let expected: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
    s.publish_batch(&topic, batch).await;
    assert_eq!(drain_ids(&mut stream, 200).await, expected);
}

/// Larger than every adapter's window of confirms in flight (RabbitMQ and NATS 1,024, Postgres
/// statements of 1,000, Kafka 10,000), so each window rolls over.
const LARGE_BATCH: usize = 12_345;

/// A batch larger than any adapter's window of unconfirmed messages ([`LARGE_BATCH`]) is
/// confirmed whole and arrives complete and, for one key and one consumer, in order: batches
/// of any size stream through a bounded window.
pub async fn a_large_batch_streams_in_order(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("large");
    let mut stream = s.subscribe(&sub.with_prefetch(200)).await;
    let batch: Vec<Message> = (0..LARGE_BATCH)
        .map(|i| message(i).with_key("one-key"))
        .collect();
    let expected: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
    s.publish_batch(&topic, batch).await;
    assert_eq!(drain_ids(&mut stream, LARGE_BATCH).await, expected);
}

/// 256 tasks sharing one publisher, each publishing 4 messages one at a time, as the request
/// handlers of a web service would: every publish is confirmed on its own and every message
/// arrives once (adapters may share a broker round trip or commit between callers, never a
/// caller's outcome).
pub async fn many_concurrent_callers_share_one_publisher(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("callers").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = spawn_acking(s.subscribe(&sub.with_prefetch(200)).await, tx);
    let mut expected = BTreeSet::new();
    let mut callers = Vec::new();
    for c in 0..256 {
        let batch: Vec<Message> = (0..4).map(|i| message(c * 4 + i)).collect();
        expected.extend(ids_of(&batch));
        let (publisher, topic) = (s.publisher.clone(), topic.clone());
        callers.push(tokio::spawn(async move {
            for m in batch {
                publisher.publish(&topic, m).await.expect("publish");
            }
        }));
    }
    for c in callers {
        within("a caller's publishes", c)
            .await
            .expect("caller task");
    }
    let mut got = BTreeSet::new();
    while got.len() < expected.len() {
        let id = within("all messages", rx.recv())
            .await
            .expect("consumer alive");
        assert!(got.insert(id), "duplicate delivery of an acked message");
    }
    assert_eq!(got, expected);
    s.subscriber.close().await.expect("close");
    within("consumer task to end after close", consumer)
        .await
        .expect("consumer task");
}

/// 128 tasks sharing one publisher, half of them publishing to a topic nothing subscribes to:
/// each caller hears its own outcome. Where the broker refuses an unroutable message
/// (RabbitMQ, with `unroutable=error`, the default) every unroutable publish fails and every
/// routable one succeeds; elsewhere all succeed. Either way every routable message arrives.
/// (RabbitMQ returns an unroutable message without a delivery tag and may confirm several
/// messages with one ack, so a client that pairs returns with acks by arrival can hand the
/// refusal to a neighbour: a routable publish fails and the unroutable one is "confirmed".)
pub async fn routable_and_unroutable_callers_hear_their_own_outcome(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("routed").await;
    let nowhere = s.topic("nowhere");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = spawn_acking(s.subscribe(&sub.with_prefetch(200)).await, tx);
    let mut expected = BTreeSet::new();
    let mut callers = Vec::new();
    for c in 0..128 {
        let routed = c % 2 == 0;
        let batch: Vec<Message> = (0..4).map(|i| message(c * 4 + i)).collect();
        if routed {
            expected.extend(ids_of(&batch));
        }
        let to = if routed {
            topic.clone()
        } else {
            nowhere.clone()
        };
        let publisher = s.publisher.clone();
        callers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for m in batch {
                outcomes.push(publisher.publish(&to, m).await);
            }
            (routed, outcomes)
        }));
    }
    let refuses = f.backend() == "rabbitmq";
    for c in callers {
        let (routed, outcomes) = within("a caller's publishes", c)
            .await
            .expect("caller task");
        for outcome in outcomes {
            match (routed, refuses) {
                (true, _) | (false, false) => {
                    assert!(outcome.is_ok(), "routed {routed}: {outcome:?}")
                }
                (false, true) => assert!(outcome.is_err(), "an unroutable publish was confirmed"),
            }
        }
    }
    let mut got = BTreeSet::new();
    while got.len() < expected.len() {
        let id = within("all routable messages", rx.recv())
            .await
            .expect("consumer alive");
        assert!(got.insert(id), "duplicate delivery of an acked message");
    }
    assert_eq!(got, expected);
    s.subscriber.close().await.expect("close");
    within("consumer task to end after close", consumer)
        .await
        .expect("consumer task");
}

/// Four publishers and two consumers of one subscription on one topic: every message arrives,
/// none twice when all are acked.
pub async fn concurrent_publishers_and_subscribers(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("load").await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut consumers = Vec::new();
    for _ in 0..2 {
        consumers.push(spawn_acking(s.subscribe(&sub).await, tx.clone()));
    }
    let per = 100;
    let mut publishers = Vec::new();
    let mut expected = BTreeSet::new();
    for p in 0..4 {
        let publisher = f.publisher();
        let batch: Vec<Message> = (0..per).map(|i| message(p * per + i)).collect();
        expected.extend(ids_of(&batch));
        let topic = topic.clone();
        publishers.push(tokio::spawn(async move {
            for m in batch {
                publisher.publish(&topic, m).await.expect("publish");
            }
        }));
    }
    for p in publishers {
        p.await.expect("publisher task");
    }
    let mut got = BTreeSet::new();
    while got.len() < expected.len() {
        let id = within("all messages", rx.recv())
            .await
            .expect("consumers alive");
        assert!(got.insert(id), "duplicate delivery of an acked message");
    }
    assert_eq!(got, expected);
    s.subscriber.close().await.expect("close");
    for c in consumers {
        within("consumer task to end after close", c)
            .await
            .expect("consumer task");
    }
}

/// Twenty topics with their own subscriptions at once: each gets exactly its own messages.
pub async fn many_topics_at_once(f: &Fixture) {
    let s = f.scene();
    let mut streams = Vec::new();
    for t in 0..20 {
        streams.push(s.open(&format!("topic{t}")).await);
    }
    let mut handles = Vec::new();
    for (t, (topic, _)) in streams.iter().enumerate() {
        let publisher = s.publisher.clone();
        let topic = topic.clone();
        handles.push(tokio::spawn(async move {
            let batch: Vec<Message> = (0..10).map(|i| message(t * 100 + i)).collect();
            publisher.publish_batch(&topic, batch).await.expect("batch");
        }));
    }
    for h in handles {
        h.await.expect("publish task");
    }
    for (t, (topic, stream)) in streams.iter_mut().enumerate() {
        for d in recv_n(stream, 10).await {
            assert_eq!(&d.topic, topic);
            let seq: usize = d.message().headers["seq"].parse().expect("seq");
            assert_eq!(seq / 100, t, "message of another topic");
            d.ack().await.expect("ack");
        }
    }
}

/// Where the broker keeps a dedup window, a message published twice with one id (alone or
/// inside a batch) is delivered once, and publishing the duplicate still succeeds.
pub async fn same_id_twice_is_delivered_once(f: &Fixture) {
    let s = f.scene();
    let (topic, mut stream) = s.open("dedup").await;
    let m = message(1);
    s.publish(&topic, m.clone()).await;
    s.publish(&topic, m.clone()).await;
    let other = message(2);
    s.publish_batch(&topic, vec![other.clone(), other.clone(), m.clone()])
        .await;
    let got: BTreeSet<String> = drain_ids(&mut stream, 2).await.into_iter().collect();
    assert_eq!(got, BTreeSet::from([m.id, other.id]));
    expect_quiet(&mut stream, "a duplicate inside the dedup window").await;
}
