//! Shutdown: a consumer waits for in-flight handlers within its deadline and acks them, and
//! abandons (unacked, so redelivered) what is still running at the deadline.

use std::sync::Arc;
use std::time::Duration;

use longshore_core::Consumer;
use tokio::sync::mpsc;

use crate::events::{created, event_of, OrderCreated, SHUTDOWN};
use crate::helpers::{drain_ids, within};
use crate::Fixture;

/// Shutdown waits for an in-flight handler within the deadline and acks its message.
pub async fn graceful_shutdown_drains_in_flight(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("drain");
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let consumer = Consumer::new(s.subscriber.clone(), sub.clone())
        .on(move |_: OrderCreated, _| {
            let (started_tx, r) = (started_tx.clone(), r.clone());
            async move {
                let _ = started_tx.send(());
                r.notified().await;
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    s.publish_event(&topic, &event_of(&created(1))).await;
    within("handler start", started.recv()).await;
    let shutdown = tokio::spawn(consumer.shutdown(SHUTDOWN));
    release.notify_one();
    let stats = within("shutdown", shutdown).await.expect("shutdown task");
    assert_eq!(stats.acked, 1);
    // The acked message is gone: a new consumer sees the next message first.
    let marker = event_of(&created(2));
    s.publish_event(&topic, &marker).await;
    let mut stream = f.subscriber().subscribe(&sub).await.expect("subscribe");
    assert_eq!(drain_ids(&mut stream, 1).await, vec![marker.id.to_string()]);
}

/// A handler still running at the deadline is abandoned unacked: the message comes back.
pub async fn shutdown_deadline_acks_nothing_unfinished(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("deadline");
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let consumer = Consumer::new(s.subscriber.clone(), sub.clone())
        .on(move |_: OrderCreated, _| {
            let started_tx = started_tx.clone();
            async move {
                let _ = started_tx.send(());
                std::future::pending::<()>().await;
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    let event = event_of(&created(1));
    s.publish_event(&topic, &event).await;
    within("handler start", started.recv()).await;
    let stats = consumer.shutdown(Duration::from_millis(100)).await;
    assert_eq!((stats.acked, stats.dead_lettered), (0, 0));
    let mut stream = f.subscriber().subscribe(&sub).await.expect("subscribe");
    assert_eq!(drain_ids(&mut stream, 1).await, vec![event.id.to_string()]);
}
