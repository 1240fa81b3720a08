//! The same order flow on every compiled-in backend, chosen only by URL, with the same
//! observable outcome: handled events, dead letters, store contents.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore::prelude::*;
use longshore::{HEADER_DLQ_ATTEMPTS, HEADER_DLQ_TOPIC};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    total_cents: u64,
}
impl DomainEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order_placed";
}

const WAIT: Duration = Duration::from_secs(60);

/// What the flow observed; equal on every backend.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    handled: BTreeSet<String>,
    dead: Vec<(String, String, String)>,
    stored_versions: Vec<u64>,
    acked: u64,
    dead_lettered: u64,
}

async fn order_flow(url: &str) -> Option<Outcome> {
    let backend = url.split("://").next().unwrap_or(url).to_string();
    let ls = longshore_testkit::require_broker(&backend, url, longshore::connect(url).await)?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let name = format!("xb-{run}");
    let topic = format!("xb{run}.orders.placed");
    let mut dlq = ls
        .subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("dlq");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = Consumer::new(
        ls.subscriber.clone(),
        Subscription::new(name.clone(), [format!("xb{run}.orders.*")]),
    )
    .retry(RetryPolicy::exponential(2, Duration::from_millis(10)))
    .on(move |o: OrderPlaced, _| {
        let tx = tx.clone();
        async move {
            if o.total_cents == 0 {
                return Err(HandlerError::permanent("empty order"));
            }
            let _ = tx.send(o.order_id);
            Ok(())
        }
    })
    .start()
    .await
    .expect("consumer");
    let publisher = EventPublisher::new(ls.publisher.clone());
    let store: Arc<dyn EventStore> = ls
        .store()
        .unwrap_or_else(|_| Arc::new(longshore::memory::MemoryStore::new()));
    let stream = format!("orders-{run}");
    for (i, total) in [(1, 500), (2, 0), (3, 700)] {
        let event = Event::from_typed(&OrderPlaced {
            order_id: format!("o-{i}"),
            total_cents: total,
        })
        .expect("event")
        .with_aggregate_id(stream.clone());
        let expected = if i == 1 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(i - 1)
        };
        store
            .append(&stream, expected, vec![event.clone()])
            .await
            .expect("append");
        publisher.publish_to(&topic, &event).await.expect("publish");
    }
    let mut handled = BTreeSet::new();
    for _ in 0..2 {
        handled.insert(
            tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("in time")
                .expect("handler"),
        );
    }
    let d = tokio::time::timeout(WAIT, dlq.next())
        .await
        .expect("dead letter in time")
        .expect("open")
        .expect("ok");
    let h = &d.message().headers;
    let dead = vec![(
        serde_json::from_slice::<serde_json::Value>(&d.message().payload).expect("json")["data"]
            ["order_id"]
            .to_string(),
        h.get(HEADER_DLQ_TOPIC)
            .cloned()
            .unwrap_or_default()
            .replace(&run, "RUN"),
        h.get(HEADER_DLQ_ATTEMPTS).cloned().unwrap_or_default(),
    )];
    d.ack().await.expect("ack");
    let stats = consumer.shutdown(Duration::from_secs(10)).await;
    let stored_versions = store
        .read_stream(&stream, 1, 10)
        .await
        .expect("read")
        .iter()
        .map(|r| r.version)
        .collect();
    ls.publisher.close().await.expect("close publisher");
    ls.subscriber.close().await.expect("close subscriber");
    Some(Outcome {
        handled,
        dead,
        stored_versions,
        acked: stats.acked,
        dead_lettered: stats.dead_lettered,
    })
}

fn expected() -> Outcome {
    Outcome {
        handled: BTreeSet::from(["o-1".to_string(), "o-3".to_string()]),
        dead: vec![(
            "\"o-2\"".to_string(),
            "xbRUN.orders.placed".to_string(),
            "1".to_string(),
        )],
        stored_versions: vec![1, 2, 3],
        acked: 2,
        dead_lettered: 1,
    }
}

#[tokio::test]
async fn cross_broker_memory() {
    assert_eq!(order_flow("memory://").await, Some(expected()));
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn cross_broker_rabbitmq() {
    let url = common::amqp_url();
    if let Some(outcome) = order_flow(&url).await {
        assert_eq!(outcome, expected());
    }
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn cross_broker_nats() {
    let url = common::nats_url();
    if let Some(outcome) = order_flow(&url).await {
        assert_eq!(outcome, expected());
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn cross_broker_postgres() {
    let url = common::postgres_url();
    if let Some(outcome) = order_flow(&url).await {
        assert_eq!(outcome, expected());
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn cross_broker_sqlite() {
    let url = common::sqlite_url();
    assert_eq!(order_flow(&url).await, Some(expected()));
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn cross_broker_kafka() {
    let url = common::kafka_url();
    if let Some(outcome) = order_flow(&url).await {
        assert_eq!(outcome, expected());
    }
}
