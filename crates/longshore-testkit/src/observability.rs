//! Observability scenarios: trace context crosses the broker, and the metrics count exactly
//! what happened. They run through `observe_publisher` / `observe_subscriber`, as the facade's
//! `connect` hands them out.

use std::sync::Arc;
use std::time::Duration;

use longshore_core::observe::{names, observe_publisher, observe_subscriber};
use longshore_core::{
    Consumer, Event, EventPublisher, HandlerError, Message, RetryPolicy, Subscription, TraceContext,
};
use tokio::sync::mpsc;

use crate::observe::{counter, gauge, histogram_count, install, spans};
use crate::runtime::OrderCreated;
use crate::{eventually, within, BrokerFactory, Names};

const SHUTDOWN: Duration = Duration::from_secs(10);

fn order(id: &str) -> Event {
    Event::from_typed(&OrderCreated {
        order_id: id.into(),
        total_cents: 100,
    })
    .expect("encode")
}

/// A message published inside a trace is handled inside the same trace: the handler's
/// `TraceContext::current()` and the publish, receive and handle spans all carry the
/// publisher's trace id.
pub async fn trace_context_crosses_the_broker(f: &impl BrokerFactory) {
    install();
    let n = Names::new();
    let raw = f.publisher().await;
    let backend = raw.capabilities().backend;
    let publisher = EventPublisher::new(observe_publisher(raw));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(
        observe_subscriber(f.subscriber().await),
        Subscription::new(n.sub("traced"), [n.topic("orders.#")]),
    )
    .on(move |_: OrderCreated, ctx| {
        let tx = tx.clone();
        async move {
            tx.send((ctx.event.id, TraceContext::current()))
                .map_err(HandlerError::permanent)?;
            Ok(())
        }
    })
    .start()
    .await
    .expect("start");

    let root = TraceContext::new_root();
    let event = order("traced");
    root.clone()
        .scope(publisher.publish_to(&n.topic("orders.created"), &event))
        .await
        .expect("publish");
    let (id, seen) = within("the handler", rx.recv()).await.expect("handler ran");
    assert_eq!(id, event.id);
    let seen = seen.expect("the handler runs inside a trace");
    assert_eq!(
        seen.trace_id_hex(),
        root.trace_id_hex(),
        "the handler continues the publisher's trace"
    );
    assert_ne!(seen.span_id(), root.span_id(), "the handler is a new span");

    for name in ["longshore.publish", "longshore.receive", "longshore.handle"] {
        let found = spans(name, "message_id", &event.id.to_string());
        assert_eq!(found.len(), 1, "one {name} span for the message: {found:?}");
        let fields = &found[0].fields;
        assert_eq!(
            fields.get("trace_id").map(String::as_str),
            Some(root.trace_id_hex().as_str()),
            "{name} span carries the trace id: {fields:?}"
        );
        assert_eq!(fields.get("backend").map(String::as_str), Some(backend));
    }
    consumer.shutdown(SHUTDOWN).await;
}

/// Publishes, acks, a retry, a dead letter and a refused publish each move their counter by
/// exactly one per message; in-flight returns to zero and the consumer gauge follows the
/// consumer's life.
pub async fn metrics_count_every_outcome(f: &impl BrokerFactory) {
    install();
    let n = Names::new();
    let raw = f.publisher().await;
    let caps = raw.capabilities();
    let backend = caps.backend;
    let publisher = observe_publisher(raw);
    let events = EventPublisher::new(publisher.clone());
    let topic = n.topic("orders.created");
    let sub = n.sub("metered");
    let consumer = Consumer::new(
        observe_subscriber(f.subscriber().await),
        Subscription::new(sub.clone(), [topic.clone()]),
    )
    .retry(
        RetryPolicy::exponential(3, Duration::from_millis(10))
            .with_max_backoff(Duration::from_millis(50)),
    )
    .on(|e: OrderCreated, ctx| async move {
        match e.order_id.as_str() {
            "flaky" if ctx.attempt == 1 => Err(HandlerError::transient("first attempt fails")),
            "bad" => Err(HandlerError::permanent("never valid")),
            _ => Ok(()),
        }
    })
    .start()
    .await
    .expect("start");
    let on_topic = [("backend", backend), ("topic", topic.as_str())];
    let on_sub = [("backend", backend), ("subscription", sub.as_str())];
    assert_eq!(gauge(names::CONSUMERS, &on_sub), 1.0, "one open consumer");

    for id in ["a", "b", "c", "flaky", "bad"] {
        events
            .publish_to(&topic, &order(id))
            .await
            .expect("publish");
    }
    events
        .publish_batch_to(&topic, &[order("d"), order("e")])
        .await
        .expect("batch");
    let oversized = Message::new(vec![b'x'; caps.max_payload + 1]);
    assert!(
        publisher.publish(&topic, oversized).await.is_err(),
        "an oversized message is refused"
    );

    eventually("6 acks and 1 dead letter", || {
        let s = consumer.stats();
        s.acked == 6 && s.dead_lettered == 1
    })
    .await;

    assert_eq!(counter(names::PUBLISHED, &on_topic), 8);
    assert_eq!(counter(names::PUBLISH_CONFIRMED, &on_topic), 7);
    assert_eq!(counter(names::PUBLISH_FAILED, &on_topic), 1);
    assert_eq!(
        histogram_count(names::PUBLISH_DURATION, &on_topic),
        7,
        "one per call"
    );
    assert_eq!(counter(names::CONSUMED, &on_sub), 7);
    assert_eq!(counter(names::ACKED, &on_sub), 6);
    assert_eq!(counter(names::DEAD_LETTERED, &on_sub), 1);
    assert_eq!(counter(names::NACKED, &on_sub), 0);
    assert_eq!(counter(names::RETRIED, &on_sub), 1);
    assert_eq!(counter(names::SETTLE_FAILED, &on_sub), 0);
    assert_eq!(gauge(names::IN_FLIGHT, &on_sub), 0.0, "everything settled");
    let outcome = |o| {
        [
            ("backend", backend),
            ("subscription", sub.as_str()),
            ("outcome", o),
        ]
    };
    assert_eq!(histogram_count(names::HANDLER_DURATION, &outcome("ok")), 6);
    assert_eq!(
        histogram_count(names::HANDLER_DURATION, &outcome("retry")),
        1
    );
    assert_eq!(
        histogram_count(names::HANDLER_DURATION, &outcome("dead_letter")),
        1
    );

    consumer.shutdown(SHUTDOWN).await;
    assert_eq!(
        gauge(names::CONSUMERS, &on_sub),
        0.0,
        "the consumer is gone"
    );
}

/// `health()` of wrapped handles reports a ready backend and the last publish and ack.
pub async fn health_reports_activity(f: &impl BrokerFactory) {
    let n = Names::new();
    let publisher = observe_publisher(f.publisher().await);
    let subscriber: Arc<dyn longshore_core::Subscriber> = observe_subscriber(f.subscriber().await);
    let before = publisher.health().await;
    assert!(
        before.is_ready(),
        "a connected publisher is ready: {before:?}"
    );
    let topic = n.topic("health");
    let mut stream = subscriber
        .subscribe(&Subscription::new(n.sub("health"), [topic.clone()]))
        .await
        .expect("subscribe");
    publisher
        .publish(&topic, crate::message(1))
        .await
        .expect("publish");
    let after = publisher.health().await;
    assert!(
        after.last_publish.is_some(),
        "last publish recorded: {after:?}"
    );
    crate::recv(&mut stream).await.ack().await.expect("ack");
    let health = subscriber.health().await;
    assert!(
        health.is_ready(),
        "a consuming subscriber is ready: {health:?}"
    );
    assert!(health.last_ack.is_some(), "last ack recorded: {health:?}");
    assert_eq!(health.backend, publisher.capabilities().backend);

    drop(stream);
    publisher.close().await.expect("close");
    subscriber.close().await.expect("close");
    for (health, what) in [
        (publisher.health().await, "publisher"),
        (subscriber.health().await, "subscriber"),
    ] {
        assert!(
            !health.is_ready(),
            "a closed {what} is not ready: {health:?}"
        );
        let detail = health.detail.unwrap_or_default();
        assert!(
            detail.contains("closed"),
            "the {what}'s detail says why: {detail}"
        );
    }
}

/// `lag()` counts the messages waiting for a subscription and drops to zero once they are
/// acknowledged; an unknown subscription is an error. Backends that cannot tell answer `None`.
pub async fn lag_counts_waiting_messages(f: &impl BrokerFactory) {
    let n = Names::new();
    let (publisher, subscriber) = (f.publisher().await, f.subscriber().await);
    let topic = n.topic("lag");
    let sub = Subscription::new(n.sub("lag"), [topic.clone()]);
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    if subscriber.lag(&sub.name).await.expect("lag").is_none() {
        println!("not applicable: this backend does not report lag");
        return;
    }
    // One by one: some Kafka-protocol brokers report batch watermarks loosely.
    for i in 0..5 {
        publisher
            .publish(&topic, crate::message(i))
            .await
            .expect("publish");
    }
    crate::lag_reaches(subscriber.as_ref(), &sub.name, 5).await;
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    crate::drain_ids(&mut stream, 5).await;
    crate::lag_reaches(subscriber.as_ref(), &sub.name, 0).await;
    let unknown = subscriber.lag(&n.sub("nobody")).await;
    assert!(
        matches!(
            unknown,
            Err(longshore_core::Error::InvalidName {
                kind: "subscription",
                ..
            })
        ),
        "lag of an unknown subscription is InvalidName: {unknown:?}"
    );
}

/// The outbox relay reports its backlog and what it relayed; a catch-up subscription reports
/// the position it has checkpointed.
pub async fn outbox_and_catch_up_metrics(f: &impl crate::StoreFactory) {
    use longshore_core::catch_up::run_catch_up;
    use longshore_core::memory::MemoryBroker;
    use longshore_core::{ExpectedVersion, OutboxRelay};

    install();
    let Some((store, outbox)) = f.store_with_outbox().await else {
        println!("not applicable: this store has no outbox");
        return;
    };
    let n = Names::new();
    let stream = n.sub("agg");
    let events: Vec<Event> = (0..5).map(|i| order(&format!("o-{i}"))).collect();
    store
        .append(&stream, ExpectedVersion::NoStream, events)
        .await
        .expect("append");

    let relay_name = n.sub("relay");
    let relay = Arc::new(OutboxRelay::new(
        relay_name.clone(),
        outbox,
        Arc::new(MemoryBroker::default().publisher()),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn({
        let relay = relay.clone();
        async move {
            relay
                .run(async {
                    let _ = stop_rx.await;
                })
                .await
        }
    });
    let on_relay = [("relay", relay_name.as_str())];
    eventually("5 events relayed", || {
        counter(names::OUTBOX_RELAYED, &on_relay) == 5
    })
    .await;
    let _ = stop_tx.send(());
    assert_eq!(running.await.expect("relay task"), 5);
    // Read once before the first pass, when all five were waiting.
    assert_eq!(gauge(names::OUTBOX_BACKLOG, &on_relay), 5.0);

    let catch_up = n.sub("projection");
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let (store, catch_up) = (store.clone(), catch_up.clone());
        async move {
            run_catch_up(
                store,
                &catch_up,
                async {
                    let _ = stop_rx.await;
                },
                move |event| {
                    let tx = seen_tx.clone();
                    async move { tx.send(event.position) }
                },
            )
            .await
        }
    });
    let mut last = 0;
    for _ in 0..5 {
        last = within("a caught-up event", seen_rx.recv())
            .await
            .expect("handler ran");
    }
    let _ = stop_tx.send(());
    let stopped_at = task.await.expect("catch-up task").expect("catch-up");
    assert_eq!(stopped_at, last);
    assert_eq!(
        gauge(
            names::CHECKPOINT_POSITION,
            &[("subscription", catch_up.as_str())]
        ),
        last as f64
    );
}
