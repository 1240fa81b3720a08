//! Broker scenarios: publish, subscribe, settle, route. Each takes a [`BrokerFactory`].

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use longshore_core::subscriber::{
    HEADER_DLQ_ATTEMPTS, HEADER_DLQ_REASON, HEADER_DLQ_SUBSCRIPTION, HEADER_DLQ_TOPIC,
};
use longshore_core::{Error, Message, Subscription};

use crate::{drain_ids, expect_quiet, message, recv, recv_n, within, BrokerFactory, Names};

/// A message published after the subscription exists arrives with id, key, payload and
/// headers intact, and the topic it was published to.
pub async fn publish_then_subscribe_keeps_id_payload_headers_key(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("orders.created");
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("a"), [topic.clone()]))
        .await
        .expect("subscribe");
    let sent = Message::new(&b"{\"hello\":\"world\"}"[..])
        .with_key("order-42")
        .with_header("tenant", "acme")
        .with_header("unicode", "注文 ✓");
    publisher
        .publish(&topic, sent.clone())
        .await
        .expect("publish");
    let d = recv(&mut stream).await;
    assert_eq!(d.message.id, sent.id);
    assert_eq!(d.message.payload, sent.payload);
    assert_eq!(d.message.key.as_deref(), Some("order-42"));
    for (k, v) in &sent.headers {
        assert_eq!(d.message.headers.get(k), Some(v), "header {k}");
    }
    assert_eq!(d.topic, topic);
    assert_eq!(d.attempt, 1);
    d.ack().await.expect("ack");
}

/// Four publishers and two consumers of one subscription on one topic: every message arrives,
/// none twice when all are acked.
pub async fn concurrent_publishers_and_subscribers(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("load");
    let sub = Subscription::new(n.sub("load"), [topic.clone()]);
    let subscriber = f.subscriber().await;
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
        let tx = tx.clone();
        consumers.push(tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(Ok(d)) = stream.next().await {
                let id = d.message.id.clone();
                d.ack().await.expect("ack");
                if tx.send(id).is_err() {
                    break;
                }
            }
        }));
    }
    let per = 100;
    let mut publishers = Vec::new();
    let mut expected = BTreeSet::new();
    for p in 0..4 {
        let publisher = f.publisher().await;
        let batch: Vec<Message> = (0..per).map(|i| message(p * per + i)).collect();
        expected.extend(batch.iter().map(|m| m.id.clone()));
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
    subscriber.close().await.expect("close");
    for c in consumers {
        within("consumer task to end after close", c)
            .await
            .expect("consumer task");
    }
}

/// Twenty topics with their own subscriptions at once: each gets exactly its own messages.
pub async fn many_topics_at_once(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let mut streams = Vec::new();
    for t in 0..20 {
        let topic = n.topic(&format!("topic{t}"));
        streams.push((
            topic.clone(),
            subscriber
                .subscribe(&Subscription::new(n.sub(&format!("s{t}")), [topic]))
                .await
                .expect("subscribe"),
        ));
    }
    let mut handles = Vec::new();
    for (t, (topic, _)) in streams.iter().enumerate() {
        let publisher = publisher.clone();
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
            let seq: usize = d.message.headers["seq"].parse().expect("seq");
            assert_eq!(seq / 100, t, "message of another topic");
            d.ack().await.expect("ack");
        }
    }
}

/// A nacked message comes back (attempt > 1 where counted); nothing is lost.
pub async fn nack_redelivers(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("nack");
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("nack"), [topic.clone()]))
        .await
        .expect("subscribe");
    let ids: Vec<String> = (0..5).map(message).map(|m| m.id).collect();
    let batch: Vec<Message> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| message(i).with_id(id.clone()))
        .collect();
    publisher.publish_batch(&topic, batch).await.expect("batch");
    let mut acked = HashSet::new();
    let mut nacked_once = HashSet::new();
    while acked.len() < ids.len() {
        let d = recv(&mut stream).await;
        let id = d.message.id.clone();
        if nacked_once.insert(id.clone()) {
            d.nack(None).await.expect("nack");
        } else {
            d.ack().await.expect("ack");
            acked.insert(id);
        }
    }
    assert_eq!(acked, ids.into_iter().collect());
}

/// A nack with a delay redelivers the message (after the delay; the time is not asserted).
pub async fn nack_with_delay_redelivers(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("delay");
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("delay"), [topic.clone()]))
        .await
        .expect("subscribe");
    let m = message(1);
    publisher.publish(&topic, m.clone()).await.expect("publish");
    let d = recv(&mut stream).await;
    d.nack(Some(Duration::from_millis(200)))
        .await
        .expect("nack");
    let again = recv(&mut stream).await;
    assert_eq!(again.message.id, m.id);
    again.ack().await.expect("ack");
}

/// With prefetch 1 a single consumer does not get the next message while one is unacked,
/// and gets it right after the ack.
pub async fn unacked_message_blocks_next_with_prefetch_one(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("inorder");
    let sub = Subscription::new(n.sub("inorder"), [topic.clone()]).with_prefetch(1);
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    // One key: brokers order by key (Kafka only within a partition), not across keys.
    let (a, b) = (message(1).with_key("k"), message(2).with_key("k"));
    publisher
        .publish_batch(&topic, vec![a.clone(), b.clone()])
        .await
        .expect("batch");
    let first = recv(&mut stream).await;
    assert_eq!(first.message.id, a.id);
    expect_quiet(&mut stream, "prefetch 1 with one unacked message").await;
    first.ack().await.expect("ack");
    let second = recv(&mut stream).await;
    assert_eq!(second.message.id, b.id);
    second.ack().await.expect("ack");
}

/// A consumer closed and reopened ten times, acking a few each time, loses nothing.
pub async fn reopen_repeatedly_without_loss(f: &impl BrokerFactory) {
    let n = Names::new();
    let publisher = f.publisher().await;
    let topic = n.topic("reopen");
    let sub = Subscription::new(n.sub("reopen"), [topic.clone()]).with_prefetch(2);
    let subscriber = f.subscriber().await;
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let batch: Vec<Message> = (0..30).map(message).collect();
    let expected: BTreeSet<String> = batch.iter().map(|m| m.id.clone()).collect();
    publisher.publish_batch(&topic, batch).await.expect("batch");
    let mut got = BTreeSet::new();
    for _ in 0..10 {
        let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
        // Ack two, leave one unsettled and drop it with the stream: it must come back.
        for d in recv_n(&mut stream, 2).await {
            got.insert(d.message.id.clone());
            d.ack().await.expect("ack");
        }
        let unsettled = recv(&mut stream).await;
        drop(unsettled);
        drop(stream);
    }
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    while got.len() < expected.len() {
        let d = recv(&mut stream).await;
        got.insert(d.message.id.clone());
        d.ack().await.expect("ack");
    }
    assert_eq!(got, expected);
}

/// Many consumers subscribing and being dropped concurrently neither fail nor lose messages.
pub async fn concurrent_subscribe_and_close(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("churn");
    let sub = Subscription::new(n.sub("churn"), [topic.clone()]);
    let subscriber = f.subscriber().await;
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let subscriber = subscriber.clone();
        let sub = sub.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let stream = subscriber.subscribe(&sub).await.expect("subscribe");
                drop(stream);
            }
        }));
    }
    for t in tasks {
        t.await.expect("churn task");
    }
    let publisher = f.publisher().await;
    let m = message(1);
    publisher.publish(&topic, m.clone()).await.expect("publish");
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    assert_eq!(drain_ids(&mut stream, 1).await, vec![m.id]);
}

/// Everything published before `close` returns is delivered.
pub async fn publisher_close_flushes_everything(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("flush");
    let subscriber = f.subscriber().await;
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("flush"), [topic.clone()]))
        .await
        .expect("subscribe");
    let publisher = f.publisher().await;
    let batch: Vec<Message> = (0..50).map(message).collect();
    let expected: BTreeSet<String> = batch.iter().map(|m| m.id.clone()).collect();
    publisher.publish_batch(&topic, batch).await.expect("batch");
    publisher.close().await.expect("close");
    drop(publisher);
    let got: BTreeSet<String> = drain_ids(&mut stream, 50).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// A subscription receives nothing from topics its patterns do not match.
pub async fn topic_isolation(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let (mine, other) = (n.topic("mine"), n.topic("other"));
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("iso"), [mine.clone()]))
        .await
        .expect("subscribe");
    let mut other_stream = subscriber
        .subscribe(&Subscription::new(n.sub("other"), [other.clone()]))
        .await
        .expect("subscribe");
    publisher
        .publish_batch(&other, (0..5).map(message).collect())
        .await
        .expect("batch");
    let marker = message(99);
    publisher
        .publish(&mine, marker.clone())
        .await
        .expect("publish");
    // The other subscription has all five before we look at ours.
    drain_ids(&mut other_stream, 5).await;
    let d = recv(&mut stream).await;
    assert_eq!(d.message.id, marker.id);
    assert_eq!(d.topic, mine);
    d.ack().await.expect("ack");
    expect_quiet(&mut stream, "messages of another topic").await;
}

/// A consumer that goes away with unacked messages; a new consumer of the subscription gets
/// every one of them.
pub async fn dropped_consumer_then_new_one_gets_everything(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("cancel");
    let sub = Subscription::new(n.sub("cancel"), [topic.clone()]);
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let batch: Vec<Message> = (0..10).map(message).collect();
    let expected: BTreeSet<String> = batch.iter().map(|m| m.id.clone()).collect();
    publisher.publish_batch(&topic, batch).await.expect("batch");
    let held = recv_n(&mut stream, 3).await;
    drop(stream);
    drop(held);
    let mut again = f
        .subscriber()
        .await
        .subscribe(&sub)
        .await
        .expect("resubscribe");
    let got: BTreeSet<String> = drain_ids(&mut again, 10).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// Two subscriptions each get every message (fan-out); two consumers of one subscription
/// split them (competing consumers), together getting each once.
pub async fn fanout_and_competing_consumers(f: &impl BrokerFactory) {
    let n = Names::new();
    let publisher = f.publisher().await;
    let topic = n.topic("fan");
    let s1 = Subscription::new(n.sub("one"), [topic.clone()]).with_prefetch(1);
    let s2 = Subscription::new(n.sub("two"), [topic.clone()]).with_prefetch(1);
    let subscriber = f.subscriber().await;
    let mut only = subscriber.subscribe(&s1).await.expect("subscribe");
    let mut a = subscriber.subscribe(&s2).await.expect("subscribe");
    let mut b = f
        .subscriber()
        .await
        .subscribe(&s2)
        .await
        .expect("subscribe");
    let batch: Vec<Message> = (0..20).map(message).collect();
    let expected: BTreeSet<String> = batch.iter().map(|m| m.id.clone()).collect();
    publisher.publish_batch(&topic, batch).await.expect("batch");
    let all: BTreeSet<String> = drain_ids(&mut only, 20).await.into_iter().collect();
    assert_eq!(
        all, expected,
        "fan-out: the first subscription gets everything"
    );
    // With prefetch 1 each consumer holds one message at a time, so both must take part.
    let first_a = recv(&mut a).await;
    let first_b = recv(&mut b).await;
    assert_ne!(first_a.message.id, first_b.message.id);
    let mut got = BTreeSet::from([first_a.message.id.clone(), first_b.message.id.clone()]);
    first_a.ack().await.expect("ack");
    first_b.ack().await.expect("ack");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for mut s in [a, b] {
        let tx = tx.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            while let Some(Ok(d)) = s.next().await {
                let id = d.message.id.clone();
                if d.ack().await.is_err() || tx.send(id).is_err() {
                    break;
                }
            }
        });
    }
    while got.len() < expected.len() {
        let id = within("competing consumers to finish", rx.recv())
            .await
            .expect("consumers alive");
        assert!(
            got.insert(id),
            "a message went to both consumers of one subscription"
        );
    }
    assert_eq!(got, expected);
}

/// Gives every topic of this test a subscriber, so messages that the scenario's own
/// subscription must not see are still routable (RabbitMQ reports unroutable publishes as
/// errors by default, as it should).
async fn catch_all(n: &Names, subscriber: &Arc<dyn longshore_core::Subscriber>) {
    let all = Subscription::new(n.sub("catch-all"), [format!("{}.#", n.prefix())]);
    subscriber
        .ensure_subscription(&all)
        .await
        .expect("catch-all subscription");
}

/// `*` matches exactly one word.
pub async fn wildcard_star(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    catch_all(&n, &subscriber).await;
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("star"), [n.topic("orders.*")]))
        .await
        .expect("subscribe");
    publisher
        .publish(&n.topic("orders.created.v2"), message(1))
        .await
        .expect("publish");
    publisher
        .publish(&n.topic("orders"), message(2))
        .await
        .expect("publish");
    let hit = message(3);
    publisher
        .publish(&n.topic("orders.created"), hit.clone())
        .await
        .expect("publish");
    assert_eq!(drain_ids(&mut stream, 1).await, vec![hit.id]);
    expect_quiet(&mut stream, "`*` must match exactly one word").await;
}

/// `#` matches any number of words.
pub async fn wildcard_hash(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    catch_all(&n, &subscriber).await;
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("hash"), [n.topic("orders.#")]))
        .await
        .expect("subscribe");
    let a = message(1);
    let b = message(2);
    publisher
        .publish(&n.topic("orders.created"), a.clone())
        .await
        .expect("publish");
    publisher
        .publish(&n.topic("orders.created.v2.eu"), b.clone())
        .await
        .expect("publish");
    publisher
        .publish(&n.topic("invoices.created"), message(3))
        .await
        .expect("publish");
    let got: BTreeSet<String> = drain_ids(&mut stream, 2).await.into_iter().collect();
    assert_eq!(got, BTreeSet::from([a.id, b.id]));
    expect_quiet(&mut stream, "`#` under orders must not match invoices").await;
}

/// `#` also matches zero words (`orders.#` matches `orders`).
pub async fn hash_matches_zero_words(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("zero"), [n.topic("orders.#")]))
        .await
        .expect("subscribe");
    let m = message(1);
    publisher
        .publish(&n.topic("orders"), m.clone())
        .await
        .expect("publish");
    assert_eq!(drain_ids(&mut stream, 1).await, vec![m.id]);
}

/// A subscription with several patterns gets each matching message once.
pub async fn several_patterns_on_one_subscription(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    catch_all(&n, &subscriber).await;
    let sub = Subscription::new(
        n.sub("multi"),
        [
            n.topic("orders.*"),
            n.topic("invoices.#"),
            n.topic("orders.created"),
        ],
    );
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let a = message(1);
    let b = message(2);
    publisher
        .publish(&n.topic("orders.created"), a.clone())
        .await
        .expect("publish");
    publisher
        .publish(&n.topic("invoices.paid.late"), b.clone())
        .await
        .expect("publish");
    publisher
        .publish(&n.topic("refunds.created"), message(3))
        .await
        .expect("publish");
    let got: BTreeSet<String> = drain_ids(&mut stream, 2).await.into_iter().collect();
    assert_eq!(got, BTreeSet::from([a.id, b.id]));
    expect_quiet(
        &mut stream,
        "a message matching two patterns must arrive once",
    )
    .await;
}

/// `dead_letter` moves the message to `dlq.<subscription>` with headers naming the reason,
/// the original topic, the subscription and the attempts; it is not redelivered.
pub async fn dead_letter_carries_reason_and_topic(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("dl");
    let name = n.sub("dl");
    let sub = Subscription::new(name.clone(), [topic.clone()]);
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("subscribe dlq");
    let m = message(7).with_key("k-7");
    publisher.publish(&topic, m.clone()).await.expect("publish");
    let d = recv(&mut stream).await;
    d.dead_letter_after("boom: cannot handle", 3)
        .await
        .expect("dead letter");
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message.id, m.id);
    assert_eq!(dead.message.payload, m.payload);
    assert_eq!(dead.message.headers["seq"], "7");
    assert_eq!(
        dead.message.headers[HEADER_DLQ_REASON],
        "boom: cannot handle"
    );
    assert_eq!(dead.message.headers[HEADER_DLQ_TOPIC], topic);
    assert_eq!(dead.message.headers[HEADER_DLQ_SUBSCRIPTION], name);
    assert_eq!(dead.message.headers[HEADER_DLQ_ATTEMPTS], "3");
    dead.ack().await.expect("ack dead letter");
    expect_quiet(
        &mut stream,
        "a dead-lettered message must not be redelivered",
    )
    .await;
}

/// A dead letter republished to its original topic (what `dlq_replay` does) is delivered
/// again to the subscription.
pub async fn dead_letters_can_be_replayed(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("replay");
    let name = n.sub("replay");
    let mut stream = subscriber
        .subscribe(&Subscription::new(name.clone(), [topic.clone()]))
        .await
        .expect("subscribe");
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("subscribe dlq");
    let m = message(1);
    publisher.publish(&topic, m.clone()).await.expect("publish");
    recv(&mut stream)
        .await
        .dead_letter("first try failed")
        .await
        .expect("dead letter");
    let dead = recv(&mut dlq).await;
    let original = dead.message.headers[HEADER_DLQ_TOPIC].clone();
    let mut replay = dead.message.clone();
    replay.headers.retain(|k, _| !k.starts_with("x-"));
    publisher.publish(&original, replay).await.expect("replay");
    dead.ack().await.expect("ack dead letter");
    let again = recv(&mut stream).await;
    assert_eq!(again.message.id, m.id);
    assert_eq!(again.message.payload, m.payload);
    again.ack().await.expect("ack");
}

/// Messages published after `ensure_subscription` and before any consumer are kept.
pub async fn subscription_keeps_messages_before_consumer_starts(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("early");
    let sub = Subscription::new(n.sub("early"), [topic.clone()]);
    f.subscriber()
        .await
        .ensure_subscription(&sub)
        .await
        .expect("ensure");
    let publisher = f.publisher().await;
    let batch: Vec<Message> = (0..5).map(message).collect();
    let expected: BTreeSet<String> = batch.iter().map(|m| m.id.clone()).collect();
    publisher.publish_batch(&topic, batch).await.expect("batch");
    let mut stream = f
        .subscriber()
        .await
        .subscribe(&sub)
        .await
        .expect("subscribe");
    let got: BTreeSet<String> = drain_ids(&mut stream, 5).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// A batch of 200 arrives complete and, for one key and one consumer, in order.
pub async fn batch_publish_keeps_order(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("batch");
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("batch"), [topic.clone()]).with_prefetch(50))
        .await
        .expect("subscribe");
    let batch: Vec<Message> = (0..200).map(|i| message(i).with_key("one-key")).collect();
    let expected: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
    publisher.publish_batch(&topic, batch).await.expect("batch");
    assert_eq!(drain_ids(&mut stream, 200).await, expected);
}

/// An empty batch is a no-op.
pub async fn empty_batch_is_ok(f: &impl BrokerFactory) {
    let n = Names::new();
    f.publisher()
        .await
        .publish_batch(&n.topic("empty"), Vec::new())
        .await
        .expect("empty batch");
}

/// The largest payload the backend declares (1 MiB where the limit allows) goes through intact.
pub async fn large_payload_at_limit(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let size = publisher.capabilities().max_payload.min(1024 * 1024);
    let topic = n.topic("large");
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("large"), [topic.clone()]))
        .await
        .expect("subscribe");
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let m = Message::new(payload);
    publisher
        .publish(&topic, m.clone())
        .await
        .expect("publish large");
    let d = recv(&mut stream).await;
    assert_eq!(d.message.payload.len(), size);
    assert_eq!(d.message.payload, m.payload);
    d.ack().await.expect("ack");
}

/// One byte over the declared limit is a typed error before anything is sent, alone or in a
/// batch (where the valid messages are still sent).
pub async fn oversized_payload_is_rejected(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let limit = publisher.capabilities().max_payload;
    let topic = n.topic("oversized");
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("over"), [topic.clone()]))
        .await
        .expect("subscribe");
    let big = Message::new(vec![b'x'; limit + 1]);
    match publisher.publish(&topic, big.clone()).await {
        Err(Error::PayloadTooLarge { size, limit: l }) => assert_eq!((size, l), (limit + 1, limit)),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let ok = message(1);
    let err = publisher
        .publish_batch(&topic, vec![ok.clone(), big])
        .await
        .expect_err("batch with oversized");
    assert_eq!(err.failed.len(), 1);
    assert_eq!(err.failed[0].index, 1);
    assert!(matches!(err.failed[0].error, Error::PayloadTooLarge { .. }));
    assert_eq!(drain_ids(&mut stream, 1).await, vec![ok.id]);
    expect_quiet(&mut stream, "the oversized message must not be sent").await;
}

/// Bad topics, patterns and subscription names are typed errors.
pub async fn invalid_names_are_rejected(f: &impl BrokerFactory) {
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    for topic in ["", "a..b", "a.*", "a.#", "a b", "a/b", "ä"] {
        let r = publisher.publish(topic, message(1)).await;
        assert!(
            matches!(r, Err(Error::InvalidName { .. })),
            "topic {topic:?}: {r:?}"
        );
    }
    for (name, pattern) in [
        ("", "a"),
        ("ok", ""),
        ("has space", "a"),
        ("ok", "a.**"),
        ("ok", "a..b"),
        ("-x", "a"),
    ] {
        let r = subscriber
            .subscribe(&Subscription::new(name, [pattern]))
            .await;
        assert!(
            matches!(r, Err(Error::InvalidName { .. })),
            "{name:?}/{pattern:?}: {:?}",
            r.err()
        );
    }
    let r = subscriber
        .subscribe(&Subscription::new("no-patterns", Vec::<String>::new()))
        .await;
    assert!(matches!(r, Err(Error::InvalidName { .. })));
}

/// After `close`, publishing is [`Error::Closed`].
pub async fn closed_publisher_refuses(f: &impl BrokerFactory) {
    let n = Names::new();
    let publisher = f.publisher().await;
    publisher.close().await.expect("close");
    let r = publisher.publish(&n.topic("closed"), message(1)).await;
    assert!(matches!(r, Err(Error::Closed(_))), "{r:?}");
}

/// Messages with the same key, published one by one, reach a single consumer in order.
pub async fn ordering_per_key_single_consumer(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    if !publisher.capabilities().ordered_by_key {
        println!(
            "not applicable: {} does not order by key",
            publisher.capabilities().backend
        );
        return;
    }
    let topic = n.topic("ordered");
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("ordered"), [topic.clone()]).with_prefetch(10))
        .await
        .expect("subscribe");
    let mut expected = Vec::new();
    for i in 0..30 {
        let m = message(i).with_key("aggregate-1");
        expected.push(m.id.clone());
        publisher.publish(&topic, m).await.expect("publish");
    }
    assert_eq!(drain_ids(&mut stream, 30).await, expected);
}

/// Where the broker counts deliveries, a redelivered message has a higher attempt.
pub async fn redelivery_counts_attempts(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("attempts");
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("attempts"), [topic.clone()]))
        .await
        .expect("subscribe");
    publisher
        .publish(&topic, message(1))
        .await
        .expect("publish");
    let d = recv(&mut stream).await;
    assert_eq!(d.attempt, 1);
    d.nack(None).await.expect("nack");
    let d = recv(&mut stream).await;
    if subscriber.capabilities().delivery_count {
        assert_eq!(d.attempt, 2);
    } else {
        assert!(d.attempt >= 1);
    }
    d.ack().await.expect("ack");
}
