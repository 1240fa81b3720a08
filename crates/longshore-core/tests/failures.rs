//! What happens when the backend fails: nothing is logged-and-dropped.
//!
//! `Flaky` wraps the in-memory publisher and refuses a given number of messages first, the
//! way a broker nacks or a connection drops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::memory::{MemoryBroker, MemoryConfig, MemoryStore};
use longshore_core::{
    async_trait, BatchError, Broker, Capabilities, Error, Event, EventStore, EventStream,
    ExpectedVersion, FailedMessage, Message, Outbox, OutboxRelay, Publisher, RelayError,
    RetryPolicy, Subscription,
};

struct Flaky {
    inner: Arc<dyn Publisher>,
    /// Messages still to refuse.
    refuse: AtomicUsize,
    retryable: bool,
}

impl Flaky {
    fn new(inner: Arc<dyn Publisher>, refuse: usize, retryable: bool) -> Self {
        Flaky {
            inner,
            refuse: AtomicUsize::new(refuse),
            retryable,
        }
    }

    fn refuse_one(&self) -> bool {
        self.refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn error(&self) -> Error {
        Error::Rejected {
            backend: "flaky",
            message: "nacked".into(),
            retryable: self.retryable,
        }
    }
}

#[async_trait]
impl Publisher for Flaky {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        if self.refuse_one() {
            return Err(self.error());
        }
        self.inner.publish(topic, message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        let total = messages.len();
        let mut failed = Vec::new();
        for (index, message) in messages.into_iter().enumerate() {
            if self.refuse_one() {
                failed.push(FailedMessage {
                    index,
                    message,
                    error: self.error(),
                });
            } else if let Err(error) = self.inner.publish(topic, message.clone()).await {
                failed.push(FailedMessage {
                    index,
                    message,
                    error,
                });
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(BatchError { total, failed })
        }
    }

    async fn close(&self) -> Result<(), Error> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

fn events(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new("order_created", serde_json::json!({ "i": i })))
        .collect()
}

async fn received(stream: &mut longshore_core::DeliveryStream, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let d = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("ok");
        ids.push(d.message().id.clone());
        d.ack().await.expect("ack");
    }
    ids
}

#[tokio::test]
async fn event_stream_retries_failed_events_and_sends_all() {
    let broker = MemoryBroker::default();
    let mut stream = broker
        .subscriber()
        .subscribe(&Subscription::new("s", ["events.#"]).with_prefetch(100))
        .await
        .expect("subscribe");
    let flaky = Arc::new(Flaky::new(broker.publisher(), 7, true));
    let forwarder = EventStream::new(flaky)
        .batch_size(10)
        .retry(RetryPolicy::exponential(5, Duration::from_millis(1)));
    let evs = events(25);
    let sent = forwarder
        .forward(futures::stream::iter(evs.clone()))
        .await
        .expect("all sent after retries");
    assert_eq!(sent, 25);
    let mut got = received(&mut stream, 25).await;
    got.sort();
    let mut want: Vec<String> = evs.iter().map(|e| e.id.to_string()).collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn event_stream_returns_unsent_events_instead_of_dropping_them() {
    let broker = MemoryBroker::default();
    let flaky = Arc::new(Flaky::new(broker.publisher(), usize::MAX, false));
    let forwarder = EventStream::new(flaky).batch_size(10);
    let evs = events(15);
    let err = forwarder
        .forward(futures::stream::iter(evs.clone()))
        .await
        .expect_err("permanent failure");
    assert_eq!(err.sent, 0);
    // The whole first batch comes back, in order; the rest was never read from the input.
    assert_eq!(
        err.unsent.iter().map(|e| e.id).collect::<Vec<_>>(),
        evs[..10].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    assert!(!err.error.is_retryable());
}

#[tokio::test]
async fn relay_marks_only_confirmed_rows_and_keeps_the_rest() {
    let store = MemoryStore::with_outbox();
    for i in 0..10 {
        store
            .append(&format!("order-{i}"), ExpectedVersion::NoStream, events(1))
            .await
            .expect("append");
    }
    let broker = MemoryBroker::default();
    let mut stream = broker
        .subscriber()
        .subscribe(&Subscription::new("s", ["events.#"]).with_prefetch(100))
        .await
        .expect("subscribe");
    let outbox: Arc<dyn Outbox> = Arc::new(store.clone());
    let flaky: Arc<dyn Publisher> = Arc::new(Flaky::new(broker.publisher(), 3, true));
    let relay = OutboxRelay::new("r1", outbox.clone(), flaky).batch_size(10);
    match relay.run_once().await {
        Err(RelayError::Publish { sent, source }) => {
            assert_eq!(sent, 7);
            assert!(source.is_retryable());
        }
        other => panic!("expected a publish failure, got {other:?}"),
    }
    assert_eq!(
        outbox.pending().await.expect("pending"),
        3,
        "unconfirmed rows stay in the outbox"
    );
    let report = relay.run_once().await.expect("second pass");
    assert_eq!(report.sent, 3);
    assert_eq!(outbox.pending().await.expect("pending"), 0);
    assert_eq!(received(&mut stream, 10).await.len(), 10);
}

#[tokio::test]
async fn full_subscription_pushes_back_with_a_typed_error() {
    let broker = MemoryBroker::new(MemoryConfig {
        max_queue_depth: 3,
        // Long enough that the waiting publish below is not a race against the consumer.
        publish_timeout: Duration::from_secs(2),
        ..MemoryConfig::default()
    });
    let subscriber = broker.subscriber();
    let sub = Subscription::new("slow", ["t"]).with_prefetch(1);
    subscriber.ensure_subscription(&sub).await.expect("ensure");
    let publisher = broker.publisher();
    for i in 0..3 {
        publisher
            .publish("t", Message::new(format!("{i}")))
            .await
            .expect("room");
    }
    match publisher.publish("t", Message::new("overflow")).await {
        Err(e @ Error::Backpressure { .. }) => assert!(e.is_retryable()),
        other => panic!("expected Backpressure, got {other:?}"),
    }
    assert_eq!(
        broker.depth("slow"),
        3,
        "the queue never grows past its bound"
    );
    // Consuming makes room; a waiting publisher then gets through.
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let waiting = tokio::spawn(async move { publisher.publish("t", Message::new("late")).await });
    let d = stream.next().await.expect("open").expect("delivery");
    d.ack().await.expect("ack");
    waiting
        .await
        .expect("task")
        .expect("published once there was room");
    assert_eq!(broker.depth("slow"), 3);
}

/// Holds every batch until released, so a test can stop the relay mid-pass.
struct Gate {
    inner: Arc<dyn Publisher>,
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Publisher for Gate {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.inner.publish(topic, message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        let _ = self.entered.send(());
        self.release.notified().await;
        self.inner.publish_batch(topic, messages).await
    }

    async fn close(&self) -> Result<(), Error> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

#[tokio::test]
async fn relay_run_finishes_the_pass_in_flight_before_stopping() {
    let store = MemoryStore::with_outbox();
    for i in 0..50 {
        store
            .append(&format!("order-{i}"), ExpectedVersion::NoStream, events(1))
            .await
            .expect("append");
    }
    let broker = MemoryBroker::default();
    let mut stream = broker
        .subscriber()
        .subscribe(&Subscription::new("s", ["events.#"]).with_prefetch(100))
        .await
        .expect("subscribe");
    let outbox: Arc<dyn Outbox> = Arc::new(store.clone());
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = Gate {
        inner: broker.publisher(),
        entered: entered_tx,
        release: release.clone(),
    };
    let relay = OutboxRelay::new("r1", outbox.clone(), Arc::new(gate)).batch_size(50);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        relay
            .run(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    // The pass is inside publish_batch: ask to stop, then let the publish through.
    entered.recv().await.expect("relay reached the publisher");
    stop_tx.send(()).expect("relay alive");
    release.notify_one();
    let sent = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("relay stops")
        .expect("task");
    assert_eq!(sent, 50, "the pass in flight completes");
    assert_eq!(
        outbox.pending().await.expect("pending"),
        0,
        "published rows are marked sent"
    );
    assert_eq!(received(&mut stream, 50).await.len(), 50);
}
