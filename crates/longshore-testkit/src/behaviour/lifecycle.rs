//! Lifecycle: subscriptions keep messages across consumers that come and go, and a publisher
//! flushes on close and refuses afterwards.

use std::collections::BTreeSet;

use longshore_core::{Error, Message};

use crate::helpers::{drain_ids, ids_of, message, recv, recv_n};
use crate::Fixture;

/// A consumer closed and reopened ten times, acking a few each time, loses nothing.
pub async fn reopen_repeatedly_without_loss(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("reopen");
    let sub = sub.with_prefetch(2);
    s.ensure(&sub).await;
    let batch: Vec<Message> = (0..30).map(message).collect();
    let expected = ids_of(&batch);
    s.publish_batch(&topic, batch).await;
    let mut got = BTreeSet::new();
    for _ in 0..10 {
        let mut stream = s.subscribe(&sub).await;
        // Ack two, leave one unsettled and drop it with the stream: it must come back.
        for d in recv_n(&mut stream, 2).await {
            got.insert(d.message().id.clone());
            d.ack().await.expect("ack");
        }
        let unsettled = recv(&mut stream).await;
        drop(unsettled);
        drop(stream);
    }
    let mut stream = s.subscribe(&sub).await;
    while got.len() < expected.len() {
        let d = recv(&mut stream).await;
        got.insert(d.message().id.clone());
        d.ack().await.expect("ack");
    }
    assert_eq!(got, expected);
}

/// Many consumers subscribing and being dropped concurrently neither fail nor lose messages.
pub async fn concurrent_subscribe_and_close(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("churn").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let subscriber = s.subscriber.clone();
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
    let m = message(1);
    f.publisher()
        .publish(&topic, m.clone())
        .await
        .expect("publish");
    let mut stream = s.subscribe(&sub).await;
    assert_eq!(drain_ids(&mut stream, 1).await, vec![m.id]);
}

/// Messages published after `ensure_subscription` and before any consumer are kept.
pub async fn subscription_keeps_messages_before_consumer_starts(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("early").await;
    let batch: Vec<Message> = (0..5).map(message).collect();
    let expected = ids_of(&batch);
    f.publisher()
        .publish_batch(&topic, batch)
        .await
        .expect("batch");
    let mut stream = f.subscriber().subscribe(&sub).await.expect("subscribe");
    let got: BTreeSet<String> = drain_ids(&mut stream, 5).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// Everything published before `close` returns is delivered.
pub async fn publisher_close_flushes_everything(f: &Fixture) {
    let s = f.scene();
    let (topic, mut stream) = s.open("flush").await;
    let publisher = f.publisher();
    let batch: Vec<Message> = (0..50).map(message).collect();
    let expected = ids_of(&batch);
    publisher.publish_batch(&topic, batch).await.expect("batch");
    publisher.close().await.expect("close");
    drop(publisher);
    let got: BTreeSet<String> = drain_ids(&mut stream, 50).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// After `close`, publishing is [`Error::Closed`].
pub async fn closed_publisher_refuses(f: &Fixture) {
    let s = f.scene();
    s.publisher.close().await.expect("close");
    let r = s.publisher.publish(&s.topic("closed"), message(1)).await;
    assert!(matches!(r, Err(Error::Closed(_))), "{r:?}");
}
