//! Batch handlers: each delivery of a batch is settled by its own outcome (ok acks, a
//! transient error retries, a permanent one dead-letters), what does not decode never reaches
//! the batch, and with key ordering a batch holds at most one message per key.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longshore_core::{Consumer, Event, HandlerError, HEADER_DLQ_REASON};
use tokio::sync::mpsc;

use super::ordering::{interleaved, publish_all};
use crate::events::{created, event_of, fast_retry, OrderCancelled, OrderCreated, SHUTDOWN};
use crate::helpers::{recv, within};
use crate::Fixture;

/// What the scenario's batch handler does with order `i` (its total is `100 * i`).
fn outcome(i: u64, attempt: u32) -> Result<(), HandlerError> {
    match i {
        100 => Err(HandlerError::transient("always fails")),
        _ if i % 3 == 0 => Ok(()),
        _ if i % 3 == 1 && attempt == 1 => Err(HandlerError::transient("first try fails")),
        _ if i % 3 == 1 => Ok(()),
        _ => Err(HandlerError::permanent(format!("rejected {i}"))),
    }
}

/// 30 orders through a batch handler of at most 8: the ones it accepts are acked (those
/// failing once after a retry, in a later batch), the rejected ones dead-lettered at once, one
/// failing on every attempt dead-lettered after the last; an event of a type without a handler
/// and one whose data does not fit are dead-lettered without reaching the batch.
pub async fn batch_outcomes_settle_each_delivery(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("batch");
    let mut dlq = s.dead_letters(&sub.name).await;
    let elements = Arc::new(AtomicUsize::new(0));
    let largest = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, u32)>();
    let (count, max) = (elements.clone(), largest.clone());
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .retry(fast_retry(3))
        .concurrency(4)
        .on_batch(
            8,
            Duration::from_millis(50),
            move |batch: Vec<(OrderCreated, _)>| {
                count.fetch_add(batch.len(), Ordering::SeqCst);
                max.fetch_max(batch.len(), Ordering::SeqCst);
                let tx = tx.clone();
                async move {
                    let outcomes = batch.iter().map(
                        |(e, ctx): &(OrderCreated, longshore_core::HandlerContext)| {
                            let i = e.total_cents / 100;
                            let result = outcome(i, ctx.attempt);
                            if result.is_ok() {
                                let _ = tx.send((i, ctx.attempt));
                            }
                            result
                        },
                    );
                    outcomes.collect()
                }
            },
        )
        .start()
        .await
        .expect("start");
    let mut events: Vec<Event> = (1..=30)
        .chain([100])
        .map(|i| event_of(&created(i)))
        .collect();
    let cancel = OrderCancelled {
        order_id: "o-1".into(),
        reason: "no handler".into(),
    };
    events.push(event_of(&cancel));
    events.push(Event::new(
        "order_created",
        serde_json::json!({"wrong": true}),
    ));
    publish_all(&s, &topic, &events).await;
    let mut accepted = BTreeMap::new();
    for _ in 0..20 {
        let (i, attempt) = within("accepted orders", rx.recv()).await.expect("handler");
        accepted.insert(i, attempt);
    }
    let expected: BTreeMap<u64, u32> = (1..=30)
        .filter(|i| i % 3 != 2)
        .map(|i| (i, if i % 3 == 1 { 2 } else { 1 }))
        .collect();
    assert_eq!(accepted, expected, "order -> attempt that succeeded");
    let mut reasons = HashMap::new();
    for _ in 0..13 {
        let dead = recv(&mut dlq).await;
        reasons.insert(
            dead.message().id.clone(),
            dead.message().headers[HEADER_DLQ_REASON].clone(),
        );
        dead.ack().await.expect("ack dead letter");
    }
    let reason_of = |e: &Event| reasons.get(&e.id.to_string()).cloned().unwrap_or_default();
    for (i, e) in (1..=30).zip(&events) {
        if i % 3 == 2 {
            assert!(
                reason_of(e).contains(&format!("rejected {i}")),
                "{i}: {reasons:?}"
            );
        }
    }
    assert!(
        reason_of(&events[30]).contains("gave up after 3 attempts"),
        "{reasons:?}"
    );
    assert!(
        reason_of(&events[31]).contains("unknown event type"),
        "{reasons:?}"
    );
    assert!(
        reason_of(&events[32]).contains("permanent error"),
        "{reasons:?}"
    );
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!(
        (stats.acked, stats.dead_lettered, stats.retried),
        (20, 13, 12),
        "{stats:?}"
    );
    // 31 first attempts, 10 second ones, and the always-failing order's 2nd and 3rd.
    assert_eq!(elements.load(Ordering::SeqCst), 43);
    assert!((1..=8).contains(&largest.load(Ordering::SeqCst)));
}

/// With key ordering, 500 messages over 5 keys through batches of up to 16: no batch holds
/// two messages of one key, and each key's messages are handled in publish order.
pub async fn ordered_batches_keep_each_keys_order(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("ordered-batch");
    let seen: Arc<Mutex<HashMap<String, Vec<u64>>>> = Arc::default();
    let (done_tx, mut done) = mpsc::unbounded_channel::<usize>();
    let log = seen.clone();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .ordered_by_key()
        .concurrency(4)
        .on_batch(
            16,
            Duration::from_millis(5),
            move |batch: Vec<(OrderCreated, _)>| {
                let mut keys: Vec<&str> = batch.iter().map(|(e, _)| e.order_id.as_str()).collect();
                keys.sort_unstable();
                let unique = keys.windows(2).all(|w| w[0] != w[1]);
                let mut log = log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (e, _) in &batch {
                    log.entry(e.order_id.clone())
                        .or_default()
                        .push(e.total_cents);
                }
                let n = if unique { batch.len() } else { usize::MAX };
                let _ = done_tx.send(n);
                let outcomes = batch.iter().map(|_| Ok(())).collect();
                async move { outcomes }
            },
        )
        .start()
        .await
        .expect("start");
    publish_all(&s, &topic, &interleaved(5, 100)).await;
    let mut handled = 0;
    within("500 messages handled in batches", async {
        while handled < 500 {
            let n = done.recv().await.expect("handler");
            assert_ne!(n, usize::MAX, "a batch held two messages of one key");
            handled += n;
        }
    })
    .await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!(stats.acked, 500, "{stats:?}");
    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let expected: Vec<u64> = (0..100).collect();
    assert_eq!(seen.len(), 5);
    for (key, seqs) in seen.iter() {
        assert_eq!(seqs, &expected, "key {key} handled out of order");
    }
}
