//! Flow control: a paused consumer starts no handler until resumed, and the circuit breaker
//! opens after consecutive transient failures, lets one probe through after its cool-off and
//! closes when the probe succeeds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longshore_core::{BreakerState, CircuitBreaker, Consumer, HandlerError, RetryPolicy};
use tokio::sync::mpsc;

use crate::events::{created, event_of, send_order_ids, OrderCreated, SHUTDOWN};
use crate::helpers::{drain_ids, eventually, within, QUIET};
use crate::Fixture;

/// After `pause()` no handler runs on what is published (and the consumer holds at most one
/// fetched delivery); after `resume()` everything is handled.
pub async fn pause_stops_delivery_and_resume_continues(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("pause");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .concurrency(4)
        .on(send_order_ids(tx))
        .start()
        .await
        .expect("start");
    s.publish_event(&topic, &event_of(&created(1))).await;
    assert_eq!(
        within("before pause", rx.recv()).await.as_deref(),
        Some("o-1")
    );
    consumer.pause();
    assert!(consumer.health().paused);
    for i in 2..=4 {
        s.publish_event(&topic, &event_of(&created(i))).await;
    }
    // An absence check: nothing may be handled while paused, however long we look.
    let early = tokio::time::timeout(QUIET, rx.recv()).await;
    assert!(early.is_err(), "handled while paused: {early:?}");
    let received = consumer.stats().received;
    assert!(
        received <= 2,
        "a paused consumer took {received} deliveries"
    );
    consumer.resume();
    let mut got = Vec::new();
    for _ in 2..=4 {
        got.push(within("after resume", rx.recv()).await.expect("handler"));
    }
    got.sort();
    assert_eq!(got, ["o-2", "o-3", "o-4"]);
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!(stats.acked, 4, "{stats:?}");
}

/// Three transient failures in a row open the breaker (nothing is handled while it is
/// open); after the cool-off one message is let through, succeeds, and the breaker closes.
pub async fn breaker_opens_after_failures_and_closes_after_probe(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("breaker");
    let mut dlq = s.dead_letters(&sub.name).await;
    let failing = Arc::new(AtomicBool::new(true));
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let gate = failing.clone();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .concurrency(1)
        .retry(RetryPolicy::none())
        .circuit_breaker(CircuitBreaker::new(3, Duration::from_millis(300)))
        .on(move |e: OrderCreated, _| {
            let (gate, tx) = (gate.clone(), tx.clone());
            async move {
                if gate.load(Ordering::SeqCst) {
                    return Err(HandlerError::transient("downstream down"));
                }
                let _ = tx.send(e.order_id);
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    for i in 1..=3 {
        s.publish_event(&topic, &event_of(&created(i))).await;
    }
    eventually("breaker open", || {
        consumer.health().breaker == BreakerState::Open
    })
    .await;
    failing.store(false, Ordering::SeqCst);
    s.publish_event(&topic, &event_of(&created(4))).await;
    // Read the handler's output before the state: the breaker only leaves Open for HalfOpen,
    // so if it is still open now, it was open when we looked, and nothing may have run.
    let ran = rx.try_recv();
    if consumer.breaker() == BreakerState::Open {
        assert!(ran.is_err(), "handled while the breaker was open: {ran:?}");
    }
    let probe = match ran {
        Ok(id) => id,
        Err(_) => within("the probe", rx.recv()).await.expect("handler"),
    };
    assert_eq!(probe, "o-4");
    eventually("breaker closed", || {
        consumer.breaker() == BreakerState::Closed
    })
    .await;
    s.publish_event(&topic, &event_of(&created(5))).await;
    assert_eq!(
        within("after closing", rx.recv()).await.as_deref(),
        Some("o-5")
    );
    drain_ids(&mut dlq, 3).await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!(
        (stats.breaker_opened, stats.dead_lettered, stats.acked),
        (1, 3, 2),
        "{stats:?}"
    );
}
