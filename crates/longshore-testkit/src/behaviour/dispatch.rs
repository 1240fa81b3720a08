//! Dispatch: the runtime hands each event type to its typed handler, acks unknown types when
//! told to, skips what the inbox has seen, bounds its concurrency, and an [`EventStream`]
//! forwards events in batches.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longshore_core::memory::MemoryInbox;
use longshore_core::{
    Consumer, Event, EventStream, HandlerError, Inbox, Subscription, UnknownEventPolicy,
};
use tokio::sync::mpsc;

use crate::events::{created, event_of, send_order_ids, OrderCancelled, OrderCreated, SHUTDOWN};
use crate::helpers::{drain_ids, eventually, within};
use crate::Fixture;

/// Typed handlers receive their own structs; each event type goes to its handler.
pub async fn typed_dispatch_by_event_type(f: &Fixture) {
    let s = f.scene();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (tx1, tx2) = (tx.clone(), tx);
    let sub = Subscription::new(s.sub("dispatch"), [s.topic("orders.#")]);
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .on(move |e: OrderCreated, ctx| {
            let tx = tx1.clone();
            async move {
                assert_eq!(ctx.event.event_type, "order_created");
                tx.send(format!("created {} {}", e.order_id, e.total_cents))
                    .map_err(HandlerError::permanent)?;
                Ok(())
            }
        })
        .on(move |e: OrderCancelled, _ctx| {
            let tx = tx2.clone();
            async move {
                tx.send(format!("cancelled {} {}", e.order_id, e.reason))
                    .map_err(HandlerError::permanent)?;
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    s.publish_event(&s.topic("orders.created"), &event_of(&created(1)))
        .await;
    let cancel = OrderCancelled {
        order_id: "o-1".into(),
        reason: "changed mind".into(),
    };
    s.publish_event(&s.topic("orders.cancelled"), &event_of(&cancel))
        .await;
    let mut got = vec![
        within("created", rx.recv()).await.expect("handler ran"),
        within("cancelled", rx.recv()).await.expect("handler ran"),
    ];
    got.sort();
    assert_eq!(
        got,
        vec![
            "cancelled o-1 changed mind".to_string(),
            "created o-1 100".to_string()
        ]
    );
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.dead_lettered), (2, 0));
}

/// With [`UnknownEventPolicy::Ack`], unknown types are acked and the next event is handled.
pub async fn unknown_event_type_acked_when_configured(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("unknown-ack");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let consumer = Consumer::new(s.subscriber.clone(), sub.with_prefetch(1))
        .concurrency(1)
        .on_unknown(UnknownEventPolicy::Ack)
        .on(send_order_ids(tx))
        .start()
        .await
        .expect("start");
    s.publish_event(&topic, &Event::new("order_shipped", serde_json::json!({})))
        .await;
    s.publish_event(&topic, &event_of(&created(5))).await;
    assert_eq!(
        within("known event", rx.recv()).await.as_deref(),
        Some("o-5")
    );
    // The unknown event announces nothing, and on a partitioned broker (two messages without
    // keys may land in two partitions) it can arrive after the known one.
    eventually("both messages settled", || {
        let s = consumer.stats();
        s.acked + s.dead_lettered >= 2
    })
    .await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.dead_lettered), (2, 0), "{stats:?}");
}

/// With an inbox, a message whose id was already processed (by an earlier run of this
/// consumer, recorded in the inbox) is acked without running the handler again.
///
/// The duplicate is made by recording the id in the inbox before publishing, not by publishing
/// the same id twice: brokers with a dedup window (JetStream) rightly drop a republished id,
/// and the inbox must be exercised on every broker.
pub async fn inbox_skips_duplicates(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("inbox");
    let name = sub.name.clone();
    let inbox = Arc::new(MemoryInbox::new(1000));
    // One aggregate, so the two arrive in publish order on every broker (Kafka orders by key).
    let seen = event_of(&created(1)).with_aggregate_id("order-1");
    inbox
        .mark_processed(&name, &seen.id.to_string())
        .await
        .expect("mark");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .concurrency(1)
        .inbox(inbox.clone())
        .on(send_order_ids(tx))
        .start()
        .await
        .expect("start");
    s.publish_event(&topic, &seen).await;
    let fresh = event_of(&created(2)).with_aggregate_id("order-1");
    s.publish_event(&topic, &fresh).await;
    assert_eq!(
        within("fresh event", rx.recv()).await.as_deref(),
        Some("o-2")
    );
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.duplicates), (2, 1));
    assert!(
        rx.try_recv().is_err(),
        "an already-processed message was handled again"
    );
    let recorded = inbox
        .is_processed(&name, &fresh.id.to_string())
        .await
        .expect("check");
    assert!(recorded, "a handled message is recorded in the inbox");
}

/// [`EventStream`] forwards 250 events in batches to `events.<event_type>`; all arrive.
pub async fn event_stream_forwards_in_batches(f: &Fixture) {
    let s = f.scene();
    let sub = Subscription::new(s.sub("stream"), [s.topic("events.*")]);
    let mut stream = s.subscribe(&sub).await;
    let prefix = s.names.prefix().to_string();
    let forwarder = EventStream::new(s.publisher.clone())
        .batch_size(100)
        .max_wait(Duration::from_millis(50))
        .topic_fn(move |e| format!("{prefix}.events.{}", e.event_type));
    let events: Vec<Event> = (0..250)
        .map(|i| {
            if i % 2 == 0 {
                event_of(&created(i))
            } else {
                Event::new("order_paid", serde_json::json!({"i": i}))
            }
        })
        .collect();
    let expected: BTreeSet<String> = events.iter().map(|e| e.id.to_string()).collect();
    let sent = forwarder
        .forward(futures::stream::iter(events))
        .await
        .expect("forward");
    assert_eq!(sent, 250);
    let got: BTreeSet<String> = drain_ids(&mut stream, 250).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// No more than `concurrency` handlers run at once.
pub async fn concurrency_is_bounded(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("bounded");
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let (r, p) = (running.clone(), peak.clone());
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .concurrency(3)
        .on(move |_: OrderCreated, _| {
            let (r, p, tx) = (r.clone(), p.clone(), tx.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send(());
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    let events: Vec<Event> = (0..30).map(|i| event_of(&created(i))).collect();
    s.events()
        .publish_batch_to(&topic, &events)
        .await
        .expect("batch");
    for _ in 0..30 {
        within("handlers", rx.recv()).await;
    }
    consumer.shutdown(SHUTDOWN).await;
    let peak = peak.load(Ordering::SeqCst);
    assert!((1..=3).contains(&peak), "peak concurrency {peak}");
}
