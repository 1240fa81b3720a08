//! Observability: trace context crosses the broker, and the metrics count exactly what
//! happened. The scenarios run through `observe_publisher` / `observe_subscriber`, as the
//! facade's `connect` hands them out.

use std::time::Duration;

use longshore_core::observe::{names, observe_publisher, observe_subscriber, TraceContext};
use longshore_core::{Consumer, EventPublisher, HandlerError, Message, RetryPolicy, Subscription};
use tokio::sync::mpsc;

use crate::events::{order, OrderCreated, SHUTDOWN};
use crate::helpers::{eventually, within};
use crate::observe::{counter, gauge, histogram_count, install, spans};
use crate::Fixture;

/// A message published inside a trace is handled inside the same trace: the handler's
/// `TraceContext::current()` and the publish, receive and handle spans all carry the
/// publisher's trace id.
pub async fn trace_context_crosses_the_broker(f: &Fixture) {
    install();
    let s = f.scene();
    let backend = s.publisher.capabilities().backend;
    let publisher = EventPublisher::new(observe_publisher(s.publisher.clone()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sub = Subscription::new(s.sub("traced"), [s.topic("orders.#")]);
    let consumer = Consumer::new(observe_subscriber(s.subscriber.clone()), sub)
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
        .scope(publisher.publish_to(&s.topic("orders.created"), &event))
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
pub async fn metrics_count_every_outcome(f: &Fixture) {
    install();
    let s = f.scene();
    let caps = s.publisher.capabilities();
    let backend = caps.backend;
    let publisher = observe_publisher(s.publisher.clone());
    let events = EventPublisher::new(publisher.clone());
    let topic = s.topic("orders.created");
    let sub = s.sub("metered");
    let consumer = Consumer::new(
        observe_subscriber(s.subscriber.clone()),
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
