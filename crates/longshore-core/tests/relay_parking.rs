//! The relay's handling of a row the publisher refuses for good, pass by pass: the later rows
//! of its aggregate wait until it is parked, other aggregates go on at once, and a relay-wide
//! failure (a closed publisher) parks nothing.

use std::sync::Arc;

use longshore_core::memory::{MemoryBroker, MemoryStore};
use longshore_core::{
    async_trait, BatchError, Broker, Capabilities, Error, Event, EventStore, ExpectedVersion,
    FailedMessage, Message, Outbox, OutboxRelay, Publisher, RelayError,
};

/// Refuses every message on topic `events.poison` as RabbitMQ refuses an unroutable one.
struct RefusesPoison(Arc<dyn Publisher>);

#[async_trait]
impl Publisher for RefusesPoison {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.0.publish(topic, message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        if topic != "events.poison" {
            return self.0.publish_batch(topic, messages).await;
        }
        let failed = messages
            .into_iter()
            .enumerate()
            .map(|(index, message)| FailedMessage {
                index,
                message,
                error: Error::Rejected {
                    backend: "test",
                    message: "NO_ROUTE".into(),
                    retryable: false,
                },
            })
            .collect::<Vec<_>>();
        BatchError::check(failed.len(), failed)
    }

    async fn close(&self) -> Result<(), Error> {
        self.0.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
}

fn ev(ty: &str, agg: &str) -> Event {
    Event::new(ty, serde_json::json!({})).with_aggregate_id(agg)
}

#[tokio::test]
async fn a_refused_row_holds_its_aggregate_until_parked_and_nothing_else() {
    let store = MemoryStore::with_outbox();
    // Aggregate a: poison, then a good row behind it. Aggregate b: two good rows.
    store
        .append(
            "a",
            ExpectedVersion::Any,
            vec![ev("poison", "a"), ev("ok", "a")],
        )
        .await
        .expect("append a");
    store
        .append(
            "b",
            ExpectedVersion::Any,
            vec![ev("ok", "b"), ev("ok", "b")],
        )
        .await
        .expect("append b");
    let outbox: Arc<dyn Outbox> = Arc::new(store.clone());
    let publisher = Arc::new(RefusesPoison(MemoryBroker::default().publisher()));
    let relay = OutboxRelay::new("r", outbox.clone(), publisher).max_attempts(2);

    let first = relay.run_once().await.expect("first pass");
    assert_eq!(
        (first.sent, first.refused, first.parked),
        (2, 1, 0),
        "b goes, a waits"
    );
    assert_eq!(
        outbox.pending().await.expect("pending"),
        2,
        "a's two rows wait"
    );

    // Parked at its second refusal; a's later row then goes in the same pass, after it.
    let second = relay.run_once().await.expect("second pass");
    assert_eq!((second.sent, second.refused, second.parked), (1, 1, 1));
    assert_eq!(outbox.pending().await.expect("pending"), 0);
    let failed = outbox.failed(10).await.expect("failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(
        (failed[0].attempts, failed[0].topic.as_str()),
        (2, "events.poison")
    );
    assert!(failed[0].error.contains("NO_ROUTE"), "{}", failed[0].error);
}

#[tokio::test]
async fn a_closed_publisher_parks_nothing() {
    let store = MemoryStore::with_outbox();
    store
        .append("a", ExpectedVersion::Any, vec![ev("ok", "a")])
        .await
        .expect("append");
    let outbox: Arc<dyn Outbox> = Arc::new(store.clone());
    let publisher = MemoryBroker::default().publisher();
    publisher.close().await.expect("close");
    let relay = OutboxRelay::new("r", outbox.clone(), publisher).max_attempts(1);
    for _ in 0..3 {
        match relay.run_once().await {
            Err(RelayError::Publish { sent: 0, .. }) => {}
            other => panic!("expected a relay-wide failure, got {other:?}"),
        }
    }
    assert_eq!(outbox.failed_count().await.expect("failed"), 0);
    assert_eq!(outbox.pending().await.expect("pending"), 1);
}
