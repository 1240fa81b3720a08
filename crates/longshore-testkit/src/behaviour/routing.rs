//! Routing: topics are isolated, patterns match by words, subscriptions fan out, consumers of
//! one subscription compete, and one key stays in order.

use std::collections::BTreeSet;

use longshore_core::{Message, Subscription};

use crate::helpers::{drain_ids, expect_quiet, ids_of, message, recv, spawn_acking, within};
use crate::{Fixture, Scene};

/// A subscription receives nothing from topics its patterns do not match.
pub async fn topic_isolation(f: &Fixture) {
    let s = f.scene();
    let (mine, mut stream) = s.open("mine").await;
    let (other, mut other_stream) = s.open("other").await;
    s.publish_batch(&other, (0..5).map(message).collect()).await;
    let marker = message(99);
    s.publish(&mine, marker.clone()).await;
    // The other subscription has all five before we look at ours.
    drain_ids(&mut other_stream, 5).await;
    let d = recv(&mut stream).await;
    assert_eq!(d.message().id, marker.id);
    assert_eq!(d.topic, mine);
    d.ack().await.expect("ack");
    expect_quiet(&mut stream, "messages of another topic").await;
}

/// Two subscriptions each get every message (fan-out); two consumers of one subscription
/// split them (competing consumers), together getting each once.
pub async fn fanout_and_competing_consumers(f: &Fixture) {
    let s = f.scene();
    let topic = s.topic("fan");
    let s1 = Subscription::new(s.sub("one"), [topic.clone()]).with_prefetch(1);
    let s2 = Subscription::new(s.sub("two"), [topic.clone()]).with_prefetch(1);
    let mut only = s.subscribe(&s1).await;
    let mut a = s.subscribe(&s2).await;
    let mut b = f.subscriber().subscribe(&s2).await.expect("subscribe");
    let batch: Vec<Message> = (0..20).map(message).collect();
    let expected = ids_of(&batch);
    s.publish_batch(&topic, batch).await;
    let all: BTreeSet<String> = drain_ids(&mut only, 20).await.into_iter().collect();
    assert_eq!(
        all, expected,
        "fan-out: the first subscription gets everything"
    );
    // With prefetch 1 each consumer holds one message at a time, so both must take part.
    let first_a = recv(&mut a).await;
    let first_b = recv(&mut b).await;
    assert_ne!(first_a.message().id, first_b.message().id);
    let mut got = BTreeSet::from([first_a.message().id.clone(), first_b.message().id.clone()]);
    first_a.ack().await.expect("ack");
    first_b.ack().await.expect("ack");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for stream in [a, b] {
        spawn_acking(stream, tx.clone());
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

/// Gives every topic of this scene a subscriber, so messages that the scenario's own
/// subscription must not see are still routable (RabbitMQ reports unroutable publishes as
/// errors by default, as it should).
async fn catch_all(s: &Scene) {
    let all = Subscription::new(s.sub("catch-all"), [format!("{}.#", s.names.prefix())]);
    s.subscriber
        .ensure_subscription(&all)
        .await
        .expect("catch-all subscription");
}

/// A stream of a subscription `name` on `patterns` (topics under this scene's prefix), opened
/// after [`catch_all`] so non-matching publishes are still routable.
async fn patterns(s: &Scene, name: &str, patterns: &[&str]) -> longshore_core::DeliveryStream {
    catch_all(s).await;
    let patterns: Vec<String> = patterns.iter().map(|p| s.topic(p)).collect();
    s.subscribe(&Subscription::new(s.sub(name), patterns)).await
}

/// `*` matches exactly one word.
pub async fn wildcard_star(f: &Fixture) {
    let s = f.scene();
    let mut stream = patterns(&s, "star", &["orders.*"]).await;
    s.publish(&s.topic("orders.created.v2"), message(1)).await;
    s.publish(&s.topic("orders"), message(2)).await;
    let hit = message(3);
    s.publish(&s.topic("orders.created"), hit.clone()).await;
    assert_eq!(drain_ids(&mut stream, 1).await, vec![hit.id]);
    expect_quiet(&mut stream, "`*` must match exactly one word").await;
}

/// `#` matches any number of words.
pub async fn wildcard_hash(f: &Fixture) {
    let s = f.scene();
    let mut stream = patterns(&s, "hash", &["orders.#"]).await;
    let (a, b) = (message(1), message(2));
    s.publish(&s.topic("orders.created"), a.clone()).await;
    s.publish(&s.topic("orders.created.v2.eu"), b.clone()).await;
    s.publish(&s.topic("invoices.created"), message(3)).await;
    let got: BTreeSet<String> = drain_ids(&mut stream, 2).await.into_iter().collect();
    assert_eq!(got, BTreeSet::from([a.id, b.id]));
    expect_quiet(&mut stream, "`#` under orders must not match invoices").await;
}

/// `#` also matches zero words (`orders.#` matches `orders`).
pub async fn hash_matches_zero_words(f: &Fixture) {
    let s = f.scene();
    let sub = Subscription::new(s.sub("zero"), [s.topic("orders.#")]);
    let mut stream = s.subscribe(&sub).await;
    let m = message(1);
    s.publish(&s.topic("orders"), m.clone()).await;
    assert_eq!(drain_ids(&mut stream, 1).await, vec![m.id]);
}

/// A subscription with several patterns gets each matching message once.
pub async fn several_patterns_on_one_subscription(f: &Fixture) {
    let s = f.scene();
    let mut stream = patterns(&s, "multi", &["orders.*", "invoices.#", "orders.created"]).await;
    let (a, b) = (message(1), message(2));
    s.publish(&s.topic("orders.created"), a.clone()).await;
    s.publish(&s.topic("invoices.paid.late"), b.clone()).await;
    s.publish(&s.topic("refunds.created"), message(3)).await;
    let got: BTreeSet<String> = drain_ids(&mut stream, 2).await.into_iter().collect();
    assert_eq!(got, BTreeSet::from([a.id, b.id]));
    expect_quiet(
        &mut stream,
        "a message matching two patterns must arrive once",
    )
    .await;
}

/// Messages with the same key, published one by one, reach a single consumer in order.
pub async fn ordering_per_key_single_consumer(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("ordered");
    let mut stream = s.subscribe(&sub.with_prefetch(10)).await;
    let mut expected = Vec::new();
    for i in 0..30 {
        let m = message(i).with_key("aggregate-1");
        expected.push(m.id.clone());
        s.publish(&topic, m).await;
    }
    assert_eq!(drain_ids(&mut stream, 30).await, expected);
}
