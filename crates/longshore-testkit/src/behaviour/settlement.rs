//! Settlement: nacked messages come back (counted where the broker counts), an unacked
//! message holds a prefetch-1 consumer, and unsettled messages survive their consumer, given
//! back by its close rather than left to their lease.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use futures::StreamExt;
use longshore_core::Message;

use crate::helpers::{drain_ids, expect_quiet, ids_of, message, recv, recv_n};
use crate::Fixture;

/// A nacked message comes back (attempt > 1 where counted); nothing is lost.
pub async fn nack_redelivers(f: &Fixture) {
    let s = f.scene();
    let (topic, mut stream) = s.open("nack").await;
    let batch: Vec<Message> = (0..5).map(message).collect();
    let ids = ids_of(&batch);
    s.publish_batch(&topic, batch).await;
    let mut acked = HashSet::new();
    let mut nacked_once = HashSet::new();
    while acked.len() < ids.len() {
        let d = recv(&mut stream).await;
        let id = d.message().id.clone();
        if nacked_once.insert(id.clone()) {
            d.nack(None).await.expect("nack");
        } else {
            d.ack().await.expect("ack");
            acked.insert(id);
        }
    }
    assert_eq!(acked, ids.into_iter().collect());
}

/// A nacked message, and then one whose delivery is dropped unsettled while its consumer
/// stays, comes back whole: id, key, payload and every header as published. (The in-memory
/// broker keeps no copy of a delivered message; the delivery hands it back.)
pub async fn redelivered_message_is_whole(f: &Fixture) {
    let s = f.scene();
    let (topic, mut stream) = s.open("whole").await;
    let sent = message(1)
        .with_key("key-1")
        .with_header("note", "kept across redeliveries");
    s.publish(&topic, sent.clone()).await;
    let first = recv(&mut stream).await;
    assert_whole(first.message(), &sent, "first delivery");
    first.nack(None).await.expect("nack");
    let nacked = recv(&mut stream).await;
    assert_whole(nacked.message(), &sent, "after a nack");
    drop(nacked);
    let dropped = recv(&mut stream).await;
    assert_whole(dropped.message(), &sent, "after an unsettled drop");
    dropped.ack().await.expect("ack");
    expect_quiet(&mut stream, "acked after its redeliveries").await;
}

/// `got` is `sent` (adapters may add headers of their own, never change or drop one).
fn assert_whole(got: &Message, sent: &Message, when: &str) {
    assert_eq!(got.id, sent.id, "{when}: id");
    assert_eq!(got.key, sent.key, "{when}: key");
    assert_eq!(got.payload, sent.payload, "{when}: payload");
    for (name, value) in &sent.headers {
        assert_eq!(got.headers.get(name), Some(value), "{when}: header {name}");
    }
}

/// A nack with a delay redelivers the message (after the delay; the time is not asserted).
pub async fn nack_with_delay_redelivers(f: &Fixture) {
    let s = f.scene();
    let (topic, mut stream) = s.open("delay").await;
    let m = message(1);
    s.publish(&topic, m.clone()).await;
    let d = recv(&mut stream).await;
    d.nack(Some(Duration::from_millis(200)))
        .await
        .expect("nack");
    let again = recv(&mut stream).await;
    assert_eq!(again.message().id, m.id);
    again.ack().await.expect("ack");
}

/// With prefetch 1 a single consumer does not get the next message while one is unacked,
/// and gets it right after the ack.
pub async fn unacked_message_blocks_next_with_prefetch_one(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("inorder");
    let mut stream = s.subscribe(&sub.with_prefetch(1)).await;
    // One key: brokers order by key (Kafka only within a partition), not across keys.
    let (a, b) = (message(1).with_key("k"), message(2).with_key("k"));
    s.publish_batch(&topic, vec![a.clone(), b.clone()]).await;
    let first = recv(&mut stream).await;
    assert_eq!(first.message().id, a.id);
    expect_quiet(&mut stream, "prefetch 1 with one unacked message").await;
    first.ack().await.expect("ack");
    let second = recv(&mut stream).await;
    assert_eq!(second.message().id, b.id);
    second.ack().await.expect("ack");
}

/// Where the broker counts deliveries, a redelivered message has a higher attempt.
pub async fn redelivery_counts_attempts(f: &Fixture) {
    let s = f.scene();
    let (topic, mut stream) = s.open("attempts").await;
    s.publish(&topic, message(1)).await;
    let d = recv(&mut stream).await;
    assert_eq!(d.attempt, 1);
    d.nack(None).await.expect("nack");
    let d = recv(&mut stream).await;
    if f.capabilities().delivery_count {
        assert_eq!(d.attempt, 2);
    } else {
        assert!(d.attempt >= 1);
    }
    d.ack().await.expect("ack");
}

/// A consumer that goes away with unacked messages; a new consumer of the subscription gets
/// every one of them.
pub async fn dropped_consumer_then_new_one_gets_everything(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("cancel");
    let mut stream = s.subscribe(&sub).await;
    let batch: Vec<Message> = (0..10).map(message).collect();
    let expected = ids_of(&batch);
    s.publish_batch(&topic, batch).await;
    let held = recv_n(&mut stream, 3).await;
    drop(stream);
    drop(held);
    let mut again = f.subscriber().subscribe(&sub).await.expect("resubscribe");
    let got: BTreeSet<String> = drain_ids(&mut again, 10).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// A message nacked with a delay is not redelivered before the broker's timer: a consumer
/// sees nothing for a moment, then the message.
pub async fn delayed_nack_waits_before_redelivery(f: &Fixture) {
    let s = f.scene();
    let (topic, mut stream) = s.open("native-delay").await;
    let m = message(1);
    s.publish(&topic, m.clone()).await;
    recv(&mut stream)
        .await
        .nack(Some(Duration::from_secs(2)))
        .await
        .expect("nack");
    expect_quiet(&mut stream, "a nack delayed by 2 s redelivered at once").await;
    assert_eq!(drain_ids(&mut stream, 1).await, vec![m.id]);
}

/// How soon a message given back by a closing connection must reach another one: half the
/// 30-s lease (claim lease, `ack_wait`) the leasing backends default to. A message left to
/// its lease fails this; one given back at once has ample time, even on a loaded machine and
/// with a Kafka group to rejoin first (about 3 s here).
const GIVEN_BACK: Duration = Duration::from_secs(15);

/// Deliveries dropped unsettled just before their connection closes are given back by the
/// time `close` returns, not left leased until their lease runs out: another connection
/// receives every one soon after. (Postgres and SQLite give a dropped delivery back from a
/// task, JetStream with a NAK: `close` must wait for those.)
pub async fn unsettled_at_close_come_back_at_once(f: &Fixture) {
    given_back_at_close(f, "given-back", 20).await;
}

/// Like [`unsettled_at_close_come_back_at_once`], with only half of the messages handed out
/// when the stream is dropped: the rest were fetched (pulled, prefetched, buffered) but not
/// handed out, and must come back at once too, not after their lease or `ack_wait`.
pub async fn buffered_at_close_come_back_at_once(f: &Fixture) {
    given_back_at_close(f, "buffered-back", 10).await;
}

/// Publishes 20 messages, takes `take` of them on a second connection with a prefetch of 20,
/// drops the stream and what it took, closes that connection, and expects all 20 on the
/// first connection within [`GIVEN_BACK`].
async fn given_back_at_close(f: &Fixture, name: &str, take: usize) {
    let s = f.scene();
    let (topic, sub) = s.ensured(name).await;
    const N: usize = 20;
    let batch: Vec<Message> = (0..N).map(message).collect();
    let expected = ids_of(&batch);
    s.publish_batch(&topic, batch).await;
    let other = f.reconnect().await;
    let mut stream = other
        .subscriber()
        .subscribe(&sub.clone().with_prefetch(N as u16))
        .await
        .expect("subscribe");
    let held = recv_n(&mut stream, take).await;
    drop(stream);
    drop(held);
    other.close().await.expect("close");
    let mut again = s.subscribe(&sub).await;
    let mut got = BTreeSet::new();
    while got.len() < N {
        match tokio::time::timeout(GIVEN_BACK, again.next()).await {
            Ok(Some(Ok(d))) => {
                got.insert(d.message().id.clone());
                d.ack().await.expect("ack");
            }
            Ok(Some(Err(e))) => panic!("delivery stream error: {e}"),
            Ok(None) => panic!("delivery stream ended"),
            Err(_) => panic!(
                "{} of {N} messages dropped unsettled before close came back within {GIVEN_BACK:?}: \
                 the rest were left to their lease",
                got.len()
            ),
        }
    }
    assert_eq!(got, expected);
}

/// How long closing a broker may take when nothing is left to wait for. Adapters give up
/// waiting for outstanding work after 5 s (with a warning); with nothing outstanding a close
/// takes milliseconds, so this bound only fails a close that waited for work it never had.
const PROMPT_CLOSE: Duration = Duration::from_secs(3);

/// A broker closed while a stream is still open but idle (everything received and acked, the
/// stream not yet dropped) closes at once: an open stream's own buffer is not work a close
/// waits for. (Postgres and SQLite fetch ahead in a task; a fetch that had finished for a live
/// stream kept its close guard until the stream dropped, so such a close waited out its whole
/// 5-s limit and warned.)
pub async fn close_with_an_idle_stream_is_prompt(f: &Fixture) {
    let s = f.scene();
    let other = f.reconnect().await;
    let (publisher, subscriber) = (other.publisher(), other.subscriber());
    let (topic, sub) = (s.topic("idle-close"), s.sub("idle-close"));
    let sub = longshore_core::Subscription::new(sub, [topic.clone()]).with_prefetch(10);
    subscriber
        .ensure_subscription(&sub)
        .await
        .expect("ensure subscription");
    const N: usize = 5;
    publisher
        .publish_batch(&topic, (0..N).map(message).collect())
        .await
        .expect("publish");
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    for d in recv_n(&mut stream, N).await {
        d.ack().await.expect("ack");
    }
    let started = std::time::Instant::now();
    other.close().await.expect("close");
    let took = started.elapsed();
    println!(
        "{}: closing with an idle stream open took {took:?}",
        f.backend()
    );
    drop(stream);
    assert!(
        took < PROMPT_CLOSE,
        "closing with an idle stream open took {took:?}: it waited for work the stream never had"
    );
}
