//! Ordering by key in the runtime: with `ordered_by_key`, messages of one key are handled one
//! after another in delivery order while keys run in parallel; a retrying message holds back
//! its own key only; a shutdown in the middle loses nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longshore_core::{Consumer, Event, HandlerError};
use tokio::sync::mpsc;

use crate::events::{event_of, fast_retry, OrderCreated, SHUTDOWN};
use crate::helpers::within;
use crate::{Fixture, Scene};

/// The `seq`-th event of key `key`: `order_id` is the key, `total_cents` the sequence, and
/// the aggregate id (so the message key) is the key.
pub(crate) fn keyed(key: &str, seq: u64) -> Event {
    let e = OrderCreated {
        order_id: key.to_string(),
        total_cents: seq,
    };
    event_of(&e).with_aggregate_id(key)
}

/// `per_key` events for each of `keys` keys, interleaved (sequence-major), as published.
pub(crate) fn interleaved(keys: u64, per_key: u64) -> Vec<Event> {
    (0..per_key)
        .flat_map(|seq| (0..keys).map(move |k| keyed(&format!("k{k}"), seq)))
        .collect()
}

/// Publishes `events` in order, in batches of 500.
pub(crate) async fn publish_all(s: &Scene, topic: &str, events: &[Event]) {
    for chunk in events.chunks(500) {
        s.events()
            .publish_batch_to(topic, chunk)
            .await
            .expect("publish batch");
    }
}

/// A handler's small, varied delay: mostly none, sometimes a few yields, one in ten a sleep
/// of up to 200 µs (a tick of the timer in practice). Derived from the event, not a clock.
async fn jitter(key: &str, seq: u64) {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ key.len() as u64;
    x ^= x >> 29;
    match x % 10 {
        0 => tokio::time::sleep(Duration::from_micros(x % 200)).await,
        1..=4 => {
            for _ in 0..(x % 8) {
                tokio::task::yield_now().await;
            }
        }
        _ => {}
    }
}

/// Asserts that every key's sequences were handled in order, each exactly `0..per_key`.
fn assert_each_key_in_order(seen: &HashMap<String, Vec<u64>>, keys: u64, per_key: u64) {
    assert_eq!(seen.len() as u64, keys, "keys handled");
    let expected: Vec<u64> = (0..per_key).collect();
    for (key, seqs) in seen {
        assert_eq!(seqs, &expected, "key {key} handled out of order");
    }
}

type Seen = Arc<Mutex<HashMap<String, Vec<u64>>>>;

fn record(seen: &Seen, key: String, seq: u64) {
    let mut seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.entry(key).or_default().push(seq);
}

/// 10,000 messages over 100 keys, 32 handlers at once with varied delays: every key's
/// messages are handled in publish order.
pub async fn ordered_by_key_keeps_each_keys_order(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("keyed");
    let seen: Seen = Arc::default();
    let (done_tx, mut done) = mpsc::unbounded_channel::<()>();
    let log = seen.clone();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .ordered_by_key()
        .concurrency(32)
        .on(move |e: OrderCreated, _| {
            let (log, done_tx) = (log.clone(), done_tx.clone());
            async move {
                jitter(&e.order_id, e.total_cents).await;
                record(&log, e.order_id, e.total_cents);
                let _ = done_tx.send(());
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    publish_all(&s, &topic, &interleaved(100, 100)).await;
    within("10,000 messages handled", async {
        for _ in 0..10_000 {
            done.recv().await;
        }
    })
    .await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.dead_lettered), (10_000, 0), "{stats:?}");
    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_each_key_in_order(&seen, 100, 100);
}

/// A message failing (and retrying) holds back its own key only: the other key's messages
/// are all handled while it fails, and its key's next message only after it succeeded.
pub async fn failing_message_delays_only_its_key(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("hold");
    let failing = Arc::new(AtomicBool::new(true));
    let (failed_tx, mut failed) = mpsc::unbounded_channel::<()>();
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64)>();
    let gate = failing.clone();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .ordered_by_key()
        .concurrency(4)
        .retry(fast_retry(100_000))
        .on(move |e: OrderCreated, _| {
            let (gate, failed_tx, tx) = (gate.clone(), failed_tx.clone(), tx.clone());
            async move {
                if e.order_id == "a" && e.total_cents == 1 && gate.load(Ordering::SeqCst) {
                    let _ = failed_tx.send(());
                    return Err(HandlerError::transient("downstream of a is down"));
                }
                let _ = tx.send((e.order_id, e.total_cents));
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    let mut events = vec![keyed("a", 1), keyed("a", 2)];
    events.extend((1..=5).map(|seq| keyed("b", seq)));
    publish_all(&s, &topic, &events).await;
    within("a/1 failing", failed.recv()).await;
    for seq in 1..=5 {
        let got = within("key b, while a/1 fails", rx.recv()).await;
        assert_eq!(got, Some(("b".to_string(), seq)), "only key b may run");
    }
    failing.store(false, Ordering::SeqCst);
    let a1 = within("a/1 after recovery", rx.recv()).await;
    let a2 = within("a/2 after a/1", rx.recv()).await;
    assert_eq!((a1, a2), (Some(("a".into(), 1)), Some(("a".into(), 2))));
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.dead_lettered), (7, 0), "{stats:?}");
    assert!(stats.retried >= 1, "{stats:?}");
}

/// Shutting an ordered consumer down in the middle of 1,000 messages (with a short deadline,
/// so some are abandoned) loses nothing: never more acked than handled, keys in order up to
/// the shutdown, and a new consumer gets every message not handled before.
pub async fn ordered_shutdown_midway_loses_nothing(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("midway");
    let seen: Seen = Arc::default();
    let handled = Arc::new(AtomicU64::new(0));
    let (ids_tx, mut ids) = mpsc::unbounded_channel::<String>();
    let (log, count, tx) = (seen.clone(), handled.clone(), ids_tx.clone());
    let consumer = Consumer::new(s.subscriber.clone(), sub.clone())
        .ordered_by_key()
        .concurrency(8)
        .on(move |e: OrderCreated, ctx| {
            let (log, count, tx) = (log.clone(), count.clone(), tx.clone());
            async move {
                jitter(&e.order_id, e.total_cents).await;
                record(&log, e.order_id, e.total_cents);
                count.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(ctx.event.id.to_string());
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    let events = interleaved(10, 100);
    let all: HashSet<String> = events.iter().map(|e| e.id.to_string()).collect();
    publish_all(&s, &topic, &events).await;
    let mut got = HashSet::new();
    within("300 handled before shutdown", async {
        while got.len() < 300 {
            got.extend(ids.recv().await);
        }
    })
    .await;
    let first = consumer.shutdown(Duration::from_millis(20)).await;
    assert!(
        first.acked <= handled.load(Ordering::SeqCst),
        "acked more than was handled: {first:?}"
    );
    {
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, seqs) in seen.iter() {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{key}: {seqs:?}");
        }
    }
    while let Ok(id) = ids.try_recv() {
        got.insert(id);
    }
    let tx = ids_tx.clone();
    let second = Consumer::new(f.subscriber(), sub)
        .concurrency(8)
        .on(move |_: OrderCreated, ctx| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ctx.event.id.to_string());
                Ok(())
            }
        })
        .start()
        .await
        .expect("start again");
    within(
        "every message handled by one consumer or the other",
        async {
            while got.len() < all.len() {
                got.extend(ids.recv().await);
            }
        },
    )
    .await;
    second.shutdown(SHUTDOWN).await;
    assert_eq!(got, all);
}
