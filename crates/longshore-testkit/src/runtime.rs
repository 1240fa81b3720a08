//! Consumer-runtime scenarios: dispatch, retries, dead letters, shutdown, inbox, event stream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longshore_core::memory::MemoryInbox;
use longshore_core::subscriber::{HEADER_DLQ_ATTEMPTS, HEADER_DLQ_REASON, HEADER_DLQ_TOPIC};
use longshore_core::{
    Consumer, DomainEvent, Event, EventPublisher, EventStream, HandlerError, Message, RetryPolicy,
    Subscription, UnknownEventPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{drain_ids, recv, within, BrokerFactory, Names};

/// Test event: an order was created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    /// Order id.
    pub order_id: String,
    /// Total in cents.
    pub total_cents: u64,
}
impl DomainEvent for OrderCreated {
    const EVENT_TYPE: &'static str = "order_created";
}

/// Test event: an order was cancelled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// Order id.
    pub order_id: String,
    /// Why.
    pub reason: String,
}
impl DomainEvent for OrderCancelled {
    const EVENT_TYPE: &'static str = "order_cancelled";
}

fn fast_retry(attempts: u32) -> RetryPolicy {
    RetryPolicy::exponential(attempts, Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(50))
}

fn created(i: u64) -> OrderCreated {
    OrderCreated {
        order_id: format!("o-{i}"),
        total_cents: 100 * i,
    }
}

fn event_of<T: DomainEvent>(e: &T) -> Event {
    Event::from_typed(e).expect("encode")
}

const SHUTDOWN: Duration = Duration::from_secs(10);

/// Typed handlers receive their own structs; each event type goes to its handler.
pub async fn typed_dispatch_by_event_type(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("orders.#");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (tx1, tx2) = (tx.clone(), tx);
    let consumer = Consumer::new(
        f.subscriber().await,
        Subscription::new(n.sub("dispatch"), [topic]),
    )
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
    let publisher = EventPublisher::new(f.publisher().await);
    publisher
        .publish_to(&n.topic("orders.created"), &event_of(&created(1)))
        .await
        .expect("publish");
    let cancel = OrderCancelled {
        order_id: "o-1".into(),
        reason: "changed mind".into(),
    };
    publisher
        .publish_to(&n.topic("orders.cancelled"), &event_of(&cancel))
        .await
        .expect("publish");
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

/// A handler that fails twice, then succeeds: acked once, retried twice, no dead letter.
pub async fn retry_then_success(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("retry");
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
    let c = calls.clone();
    let consumer = Consumer::new(
        f.subscriber().await,
        Subscription::new(n.sub("retry"), [topic.clone()]),
    )
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
    EventPublisher::new(f.publisher().await)
        .publish_to(&topic, &event_of(&created(1)))
        .await
        .expect("publish");
    assert_eq!(within("success", rx.recv()).await, Some(3));
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.retried, stats.dead_lettered), (1, 2, 0));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A handler that always fails transiently: after `max_attempts` the message is in the DLQ
/// with the reason, the original topic and the attempt count, and is not redelivered.
pub async fn retries_exhausted_go_to_dlq(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("exhaust");
    let name = n.sub("exhaust");
    let subscriber = f.subscriber().await;
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("dlq");
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let consumer = Consumer::new(subscriber.clone(), Subscription::new(name, [topic.clone()]))
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
    EventPublisher::new(f.publisher().await)
        .publish_to(&topic, &event)
        .await
        .expect("publish");
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message.id, event.id.to_string());
    assert_eq!(dead.message.headers[HEADER_DLQ_TOPIC], topic);
    assert_eq!(dead.message.headers[HEADER_DLQ_ATTEMPTS], "3");
    assert!(dead.message.headers[HEADER_DLQ_REASON].contains("payment provider down"));
    dead.ack().await.expect("ack");
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.dead_lettered, stats.retried, stats.acked), (1, 2, 0));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

/// A permanent error dead-letters at once, without retries.
pub async fn permanent_error_goes_to_dlq_at_once(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("perm");
    let name = n.sub("perm");
    let subscriber = f.subscriber().await;
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("dlq");
    let consumer = Consumer::new(subscriber.clone(), Subscription::new(name, [topic.clone()]))
        .retry(fast_retry(5))
        .on(|_: OrderCreated, _| async move {
            Err::<(), _>(HandlerError::permanent("order total is negative"))
        })
        .start()
        .await
        .expect("start");
    EventPublisher::new(f.publisher().await)
        .publish_to(&topic, &event_of(&created(1)))
        .await
        .expect("publish");
    let dead = recv(&mut dlq).await;
    assert!(dead.message.headers[HEADER_DLQ_REASON].contains("order total is negative"));
    assert_eq!(dead.message.headers[HEADER_DLQ_ATTEMPTS], "1");
    dead.ack().await.expect("ack");
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.dead_lettered, stats.retried), (1, 0));
}

/// A body that is not an event goes to the DLQ; the valid message after it is handled.
pub async fn poison_body_dead_lettered_consumer_continues(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("poison");
    let name = n.sub("poison");
    let subscriber = f.subscriber().await;
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("dlq");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let consumer = Consumer::new(subscriber.clone(), Subscription::new(name, [topic.clone()]))
        .on(move |e: OrderCreated, _| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.order_id);
                Ok(())
            }
        })
        .start()
        .await
        .expect("start");
    let publisher = f.publisher().await;
    let poison = Message::new(&b"\x00\x01 definitely not json"[..]);
    publisher
        .publish(&topic, poison.clone())
        .await
        .expect("publish poison");
    EventPublisher::new(publisher)
        .publish_to(&topic, &event_of(&created(2)))
        .await
        .expect("publish");
    assert_eq!(
        within("valid message handled", rx.recv()).await.as_deref(),
        Some("o-2")
    );
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message.id, poison.id);
    assert_eq!(dead.message.payload, poison.payload);
    assert!(dead.message.headers[HEADER_DLQ_REASON].contains("undecodable"));
    dead.ack().await.expect("ack");
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.dead_lettered), (1, 1));
}

/// Empty body, invalid UTF-8, bad JSON, missing fields, wrong types, bad id, bad timestamp,
/// and data that does not fit the typed event: each is dead-lettered with a reason, none
/// panics, and nothing is lost.
pub async fn malformed_inputs_are_dead_lettered_with_reason(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("malformed");
    let name = n.sub("malformed");
    let subscriber = f.subscriber().await;
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("dlq");
    let consumer = Consumer::new(subscriber.clone(), Subscription::new(name, [topic.clone()]))
        .on(|_: OrderCreated, _| async move { Ok(()) })
        .start()
        .await
        .expect("start");
    let id = "6f1c1c9e-3c1c-4c55-9a32-0d3b8f0f6d7e";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("utf8", vec![0xff, 0xfe, 0xfd]),
        ("json", b"{\"event_id\": ".to_vec()),
        ("missing", br#"{"event_type":"order_created","data":{}}"#.to_vec()),
        ("types", format!(r#"{{"event_id":"{id}","event_type":["x"],"data":{{}},"timestamp":"2024-01-26T10:00:00"}}"#).into_bytes()),
        ("id", br#"{"event_id":"not-a-uuid","event_type":"order_created","data":{},"timestamp":"2024-01-26T10:00:00"}"#.to_vec()),
        ("timestamp", format!(r#"{{"event_id":"{id}","event_type":"order_created","data":{{}},"timestamp":"26/01/2024"}}"#).into_bytes()),
        ("data", format!(r#"{{"event_id":"{id}","event_type":"order_created","data":{{"order_id":5}},"timestamp":"2024-01-26T10:00:00"}}"#).into_bytes()),
    ];
    let publisher = f.publisher().await;
    let mut expected = std::collections::BTreeMap::new();
    for (label, body) in cases {
        let m = Message::new(body).with_header("case", label);
        expected.insert(m.id.clone(), label);
        publisher.publish(&topic, m).await.expect("publish");
    }
    for _ in 0..expected.len() {
        let dead = recv(&mut dlq).await;
        let label = expected
            .remove(&dead.message.id)
            .expect("a message we sent, once");
        let reason = &dead.message.headers[HEADER_DLQ_REASON];
        assert!(!reason.is_empty(), "{label}: empty reason");
        dead.ack().await.expect("ack");
    }
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.dead_lettered, stats.acked), (8, 0));
}

/// An event type without a handler is dead-lettered by default.
pub async fn unknown_event_type_dead_lettered(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("unknown");
    let name = n.sub("unknown");
    let subscriber = f.subscriber().await;
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("dlq");
    let consumer = Consumer::new(subscriber.clone(), Subscription::new(name, [topic.clone()]))
        .on(|_: OrderCreated, _| async move { Ok(()) })
        .start()
        .await
        .expect("start");
    let event = Event::new("order_shipped", serde_json::json!({"order_id": "o-1"}));
    EventPublisher::new(f.publisher().await)
        .publish_to(&topic, &event)
        .await
        .expect("publish");
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message.id, event.id.to_string());
    assert!(dead.message.headers[HEADER_DLQ_REASON].contains("order_shipped"));
    dead.ack().await.expect("ack");
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!(stats.dead_lettered, 1);
}

/// With [`UnknownEventPolicy::Ack`], unknown types are acked and the next event is handled.
pub async fn unknown_event_type_acked_when_configured(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("unknown-ack");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let consumer = Consumer::new(
        f.subscriber().await,
        Subscription::new(n.sub("unknown-ack"), [topic.clone()]).with_prefetch(1),
    )
    .concurrency(1)
    .on_unknown(UnknownEventPolicy::Ack)
    .on(move |e: OrderCreated, _| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(e.order_id);
            Ok(())
        }
    })
    .start()
    .await
    .expect("start");
    let publisher = EventPublisher::new(f.publisher().await);
    publisher
        .publish_to(&topic, &Event::new("order_shipped", serde_json::json!({})))
        .await
        .expect("publish");
    publisher
        .publish_to(&topic, &event_of(&created(5)))
        .await
        .expect("publish");
    assert_eq!(
        within("known event", rx.recv()).await.as_deref(),
        Some("o-5")
    );
    // The unknown event announces nothing, and on a partitioned broker (two messages without
    // keys may land in two partitions) it can arrive after the known one.
    crate::eventually("both messages settled", || {
        let s = consumer.stats();
        s.acked + s.dead_lettered >= 2
    })
    .await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.acked, stats.dead_lettered), (2, 0), "{stats:?}");
}

/// A handler failing on every other message, many times: the consumer keeps going, every
/// message ends acked or dead-lettered.
pub async fn continue_after_repeated_errors(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("flaky");
    let name = n.sub("flaky");
    let subscriber = f.subscriber().await;
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("dlq");
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let consumer = Consumer::new(subscriber.clone(), Subscription::new(name, [topic.clone()]))
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
    EventPublisher::new(f.publisher().await)
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
    assert_eq!((stats.acked, stats.dead_lettered), (10, 10));
}

/// Shutdown waits for an in-flight handler within the deadline and acks its message.
pub async fn graceful_shutdown_drains_in_flight(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("drain");
    let sub = Subscription::new(n.sub("drain"), [topic.clone()]);
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let consumer = Consumer::new(f.subscriber().await, sub.clone())
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
    let publisher = EventPublisher::new(f.publisher().await);
    publisher
        .publish_to(&topic, &event_of(&created(1)))
        .await
        .expect("publish");
    within("handler start", started.recv()).await;
    let shutdown = tokio::spawn(consumer.shutdown(SHUTDOWN));
    release.notify_one();
    let stats = within("shutdown", shutdown).await.expect("shutdown task");
    assert_eq!(stats.acked, 1);
    // The acked message is gone: a new consumer sees the next message first.
    let marker = event_of(&created(2));
    publisher
        .publish_to(&topic, &marker)
        .await
        .expect("publish marker");
    let mut stream = f
        .subscriber()
        .await
        .subscribe(&sub)
        .await
        .expect("subscribe");
    assert_eq!(drain_ids(&mut stream, 1).await, vec![marker.id.to_string()]);
}

/// A handler still running at the deadline is abandoned unacked: the message comes back.
pub async fn shutdown_deadline_acks_nothing_unfinished(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("deadline");
    let sub = Subscription::new(n.sub("deadline"), [topic.clone()]);
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let consumer = Consumer::new(f.subscriber().await, sub.clone())
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
    EventPublisher::new(f.publisher().await)
        .publish_to(&topic, &event)
        .await
        .expect("publish");
    within("handler start", started.recv()).await;
    let stats = consumer.shutdown(Duration::from_millis(100)).await;
    assert_eq!((stats.acked, stats.dead_lettered), (0, 0));
    let mut stream = f
        .subscriber()
        .await
        .subscribe(&sub)
        .await
        .expect("subscribe");
    assert_eq!(drain_ids(&mut stream, 1).await, vec![event.id.to_string()]);
}

/// With an inbox, a message whose id was already processed (by an earlier run of this
/// consumer, recorded in the inbox) is acked without running the handler again.
///
/// The duplicate is made by recording the id in the inbox before publishing, not by publishing
/// the same id twice: brokers with a dedup window (JetStream) rightly drop a republished id,
/// and the inbox must be exercised on every broker.
pub async fn inbox_skips_duplicates(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("inbox");
    let name = n.sub("inbox");
    let inbox = Arc::new(MemoryInbox::new(1000));
    // One aggregate, so the two arrive in publish order on every broker (Kafka orders by key).
    let seen = event_of(&created(1)).with_aggregate_id("order-1");
    longshore_core::Inbox::mark_processed(&*inbox, &name, &seen.id.to_string())
        .await
        .expect("mark");
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let consumer = Consumer::new(
        f.subscriber().await,
        Subscription::new(name.clone(), [topic.clone()]),
    )
    .concurrency(1)
    .inbox(inbox.clone())
    .on(move |e: OrderCreated, _| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(e.order_id);
            Ok(())
        }
    })
    .start()
    .await
    .expect("start");
    let publisher = EventPublisher::new(f.publisher().await);
    publisher
        .publish_to(&topic, &seen)
        .await
        .expect("publish already-processed");
    let fresh = event_of(&created(2)).with_aggregate_id("order-1");
    publisher.publish_to(&topic, &fresh).await.expect("publish");
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
    let recorded = longshore_core::Inbox::is_processed(&*inbox, &name, &fresh.id.to_string())
        .await
        .expect("check");
    assert!(recorded, "a handled message is recorded in the inbox");
}

/// [`EventStream`] forwards 250 events in batches to `events.<event_type>`; all arrive.
pub async fn event_stream_forwards_in_batches(f: &impl BrokerFactory) {
    let n = Names::new();
    let subscriber = f.subscriber().await;
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("stream"), [n.topic("events.*")]))
        .await
        .expect("subscribe");
    let prefix = n.prefix().to_string();
    let forwarder = EventStream::new(f.publisher().await)
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
    let expected: std::collections::BTreeSet<String> =
        events.iter().map(|e| e.id.to_string()).collect();
    let sent = forwarder
        .forward(futures::stream::iter(events))
        .await
        .expect("forward");
    assert_eq!(sent, 250);
    let got: std::collections::BTreeSet<String> =
        drain_ids(&mut stream, 250).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// No more than `concurrency` handlers run at once.
pub async fn concurrency_is_bounded(f: &impl BrokerFactory) {
    let n = Names::new();
    let topic = n.topic("bounded");
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let (r, p) = (running.clone(), peak.clone());
    let consumer = Consumer::new(
        f.subscriber().await,
        Subscription::new(n.sub("bounded"), [topic.clone()]),
    )
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
    EventPublisher::new(f.publisher().await)
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
