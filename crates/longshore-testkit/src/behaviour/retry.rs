//! Retries: transient failures are retried with backoff until success or exhaustion (then
//! dead-lettered with the attempts), permanent ones are dead-lettered at once, and a handler
//! that keeps failing does not stop the consumer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use longshore_core::{Consumer, Event, HandlerError};
use longshore_core::{HEADER_DLQ_ATTEMPTS, HEADER_DLQ_REASON, HEADER_DLQ_TOPIC};
use tokio::sync::mpsc;

use crate::events::{created, event_of, fast_retry, OrderCreated, SHUTDOWN};
use crate::helpers::{drain_ids, recv, within};
use crate::Fixture;

/// A handler that fails twice, then succeeds: acked once, retried twice, no dead letter.
pub async fn retry_then_success(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("retry");
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let c = calls.clone();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .retry(fast_retry(5))
        .on(move |_: OrderCreated, ctx| {
            let (c, tx) = (c.clone(), tx.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err(HandlerError::transient("database busy"));
                }
                let _ = tx.send(ctx.attempt);
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    s.publish_event(&topic, &event_of(&created(1))).await;
    assert_eq!(within("success", rx.recv()).await, Some(3));
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.retried, stats.dead_lettered), (1, 2, 0));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A handler that always fails transiently: after `max_attempts` the message is in the DLQ
/// with the reason, the original topic and the attempt count, and is not redelivered.
pub async fn retries_exhausted_go_to_dlq(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("exhaust");
    let mut dlq = s.dead_letters(&sub.name).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .retry(fast_retry(3))
        .on(move |_: OrderCreated, _| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(HandlerError::transient("payment provider down"))
            }
        })
        .start()
        .await
        .expect("start");
    let event = event_of(&created(1));
    s.publish_event(&topic, &event).await;
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message().id, event.id.to_string());
    assert_eq!(dead.message().headers[HEADER_DLQ_TOPIC], topic);
    assert_eq!(dead.message().headers[HEADER_DLQ_ATTEMPTS], "3");
    assert!(dead.message().headers[HEADER_DLQ_REASON].contains("payment provider down"));
    dead.ack().await.expect("ack");
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.dead_lettered, stats.retried, stats.acked), (1, 2, 0));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A permanent error dead-letters at once, without retries.
pub async fn permanent_error_goes_to_dlq_at_once(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("perm");
    let mut dlq = s.dead_letters(&sub.name).await;
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .retry(fast_retry(5))
        .on(|_: OrderCreated, _| async move {
            Err::<(), _>(HandlerError::permanent("order total is negative"))
        })
        .start()
        .await
        .expect("start");
    s.publish_event(&topic, &event_of(&created(1))).await;
    let dead = recv(&mut dlq).await;
    assert!(dead.message().headers[HEADER_DLQ_REASON].contains("order total is negative"));
    assert_eq!(dead.message().headers[HEADER_DLQ_ATTEMPTS], "1");
    dead.ack().await.expect("ack");
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.dead_lettered, stats.retried), (1, 0));
}

/// A handler failing on every other message, many times: the consumer keeps going, every
/// message ends acked or dead-lettered.
pub async fn continue_after_repeated_errors(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("flaky");
    let mut dlq = s.dead_letters(&sub.name).await;
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .retry(fast_retry(2))
        .on(move |e: OrderCreated, _| {
            let tx = tx.clone();
            async move {
                if e.total_cents % 200 == 0 {
                    return Err(HandlerError::transient("even orders fail"));
                }
                let _ = tx.send(e.total_cents);
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    let events: Vec<Event> = (1..=20).map(|i| event_of(&created(i))).collect();
    s.events()
        .publish_batch_to(&topic, &events)
        .await
        .expect("batch");
    let mut ok = Vec::new();
    for _ in 0..10 {
        ok.push(within("odd orders", rx.recv()).await.expect("handler"));
    }
    ok.sort();
    assert_eq!(ok, (0..10).map(|i| (2 * i + 1) * 100).collect::<Vec<u64>>());
    drain_ids(&mut dlq, 10).await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.dead_lettered, stats.acked), (10, 10));
}
