//! Stateful handlers and how handler errors are classified, on the in-memory backend.

use std::sync::Arc;
use std::time::Duration;

use longshore_core::memory::MemoryBroker;
use longshore_core::{
    Broker, CodecError, Consumer, DomainEvent, Error, Event, EventPublisher, EventStore,
    ExpectedVersion, HandlerError, HandlerResultExt, RetryPolicy, StoreError, Subscription,
};
use tokio::sync::mpsc;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OrderPlaced {
    order_id: String,
    total_cents: u64,
}
impl DomainEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order_placed";
}

/// A validation error of the service's own: transient unless the handler says otherwise.
#[derive(Debug, thiserror::Error)]
#[error("order has no lines")]
struct NoLines;

fn kind(e: HandlerError) -> &'static str {
    if e.is_permanent() {
        "permanent"
    } else {
        "transient"
    }
}

fn convert<E: Into<HandlerError>>(e: E) -> &'static str {
    kind(e.into())
}

#[test]
fn messages_and_decode_errors_are_permanent() {
    assert_eq!(convert("bad order"), "permanent");
    assert_eq!(convert(String::from("bad order")), "permanent");
    assert_eq!(convert(format!("order {} is empty", 7)), "permanent");
    assert_eq!(
        convert(serde_json::from_str::<u32>("x").unwrap_err()),
        "permanent"
    );
    assert_eq!(convert("x".parse::<u64>().unwrap_err()), "permanent");
    assert_eq!(
        convert(uuid::Uuid::parse_str("not-a-uuid").unwrap_err()),
        "permanent"
    );
    let codec = CodecError::Data {
        event_type: "t".into(),
        message: "missing field".into(),
    };
    assert_eq!(convert(codec), "permanent");
    let too_large = Error::PayloadTooLarge { size: 2, limit: 1 };
    assert_eq!(convert(too_large), "permanent");
    let invalid = StoreError::Invalid {
        kind: "stream",
        value: "".into(),
        reason: "empty",
    };
    assert_eq!(convert(invalid), "permanent");
}

#[test]
fn outages_and_unknown_errors_are_transient() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    assert_eq!(convert(io), "transient");
    assert_eq!(convert(Error::connection("memory", "down")), "transient");
    let conflict = StoreError::WrongExpectedVersion {
        stream_id: "s".into(),
        expected: ExpectedVersion::Exact(1),
        actual: 2,
    };
    assert_eq!(convert(conflict), "transient");
    assert_eq!(convert(StoreError::Conflict("40001".into())), "transient");
    assert_eq!(convert(NoLines), "transient");
    // A transient error whose cause is a decode error is permanent: the cause decides.
    let wrapped = Error::Backend {
        backend: "memory",
        message: "read".into(),
        retryable: true,
        source: Some(Box::new(serde_json::from_str::<u32>("x").unwrap_err())),
    };
    assert_eq!(convert(wrapped), "permanent");
}

#[test]
fn helpers_override_the_classification() {
    let validated: Result<(), NoLines> = Err(NoLines);
    assert_eq!(kind(validated.permanent().unwrap_err()), "permanent");
    let message: Result<(), &str> = Err("try later");
    assert_eq!(kind(message.transient().unwrap_err()), "transient");
    assert_eq!(kind(HandlerError::transient("busy")), "transient");
    assert_eq!(kind(HandlerError::permanent(NoLines)), "permanent");
    assert_eq!(HandlerError::from("bad order").to_string(), "bad order");
}

/// The state a service's handlers share.
struct App {
    store: Arc<dyn EventStore>,
    handled: mpsc::UnboundedSender<String>,
}

#[tokio::test]
async fn stateful_handler_first_natural_attempt_runs() {
    let broker = MemoryBroker::default();
    let store = broker.stores().expect("memory has stores").store;
    let (tx, mut handled) = mpsc::unbounded_channel();
    let app = Arc::new(App {
        store: store.clone(),
        handled: tx,
    });
    let sub = Subscription::new("stateful", ["events.order_placed"]);
    let consumer = Consumer::new(broker.subscriber(), sub)
        .with_state(app)
        .on(|app, order: OrderPlaced, ctx| async move {
            let event = Event::from_typed(&order)?.caused_by(&ctx.event);
            let stream = format!("order-{}", order.order_id);
            app.store
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await?;
            let _ = app.handled.send(order.order_id);
            Ok(())
        })
        .start()
        .await
        .expect("start");
    let placed = Event::from_typed(&OrderPlaced {
        order_id: "o-1".into(),
        total_cents: 100,
    })
    .expect("encode");
    EventPublisher::new(broker.publisher())
        .publish(&placed)
        .await
        .expect("publish");
    assert_eq!(handled.recv().await.as_deref(), Some("o-1"));
    let stored = store.read_stream("order-o-1", 1, 10).await.expect("read");
    assert_eq!(stored.len(), 1);
    let meta = &stored[0].event.metadata;
    assert_eq!(meta.causation_id, Some(placed.id.to_string()));
    assert_eq!(meta.correlation_id, Some(placed.id.to_string()));
    consumer.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_rejected_order_is_dead_lettered_without_retries() {
    let broker = MemoryBroker::default();
    let (tx, mut seen) = mpsc::unbounded_channel::<u32>();
    let sub = Subscription::new("validating", ["events.order_placed"]);
    let consumer = Consumer::new(broker.subscriber(), sub)
        .retry(RetryPolicy::exponential(5, Duration::from_millis(1)))
        .with_state(tx)
        .on(|seen, order: OrderPlaced, ctx| async move {
            let _ = seen.send(ctx.attempt);
            if order.total_cents == 0 {
                return Err("bad order".into());
            }
            Ok(())
        })
        .start()
        .await
        .expect("start");
    let empty = OrderPlaced {
        order_id: "o-0".into(),
        total_cents: 0,
    };
    EventPublisher::new(broker.publisher())
        .publish_typed(&empty, None)
        .await
        .expect("publish");
    assert_eq!(seen.recv().await, Some(1));
    // Shutdown waits for the running delivery to be settled.
    let stats = consumer.shutdown(Duration::from_secs(5)).await;
    assert_eq!((stats.dead_lettered, stats.retried), (1, 0), "{stats:?}");
    assert!(seen.try_recv().is_err(), "the handler ran again");
}

#[test]
fn derived_ids_are_pinned_and_differ_by_cause_and_index() {
    let cause = |id: &str| {
        let mut e = Event::new("order_placed", serde_json::json!({}));
        e.id = uuid::Uuid::parse_str(id).expect("uuid literal");
        e
    };
    let a = cause("0190b1a4-5f6e-7c3d-8a2b-1c2d3e4f5a6b");
    let b = cause("0190b1a4-5f6e-7c3d-8a2b-1c2d3e4f5a6c");
    let id = |cause: &Event, n| {
        Event::new("stock_reserved", serde_json::json!({}))
            .with_id_derived_from(cause, n)
            .id
    };
    // Pinned: a redelivery after an upgrade must derive the same id as before it.
    assert_eq!(
        id(&a, 0).to_string(),
        "fe556409-946b-832d-953f-eb7223e21b13"
    );
    assert_eq!(id(&a, 0).get_version_num(), 8);
    assert_ne!(id(&a, 0), id(&a, 1));
    assert_ne!(id(&a, 0), id(&b, 0));
    // The event's type is not part of it: another decision on a redelivery keeps the id.
    let other = Event::new("stock_short", serde_json::json!({})).with_id_derived_from(&a, 0);
    assert_eq!(other.id, id(&a, 0));
}
