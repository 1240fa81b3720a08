//! An order service on longshore: publish, dispatch by type, retry, dead letters, event store.
//!
//! Runs on the embedded in-memory backend by default:
//!     cargo run --example order_service
//! Any other backend is a URL away (with its feature compiled in):
//!     LONGSHORE_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --features full --example order_service
//! On SQLite the store is a file that outlives the process (run it twice: both runs' events
//! are there):
//!     LONGSHORE_URL=sqlite://orders.db cargo run --features sqlite --example order_service

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longshore::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
    customer: String,
    total_cents: u64,
}
impl DomainEvent for OrderCreated {
    const EVENT_TYPE: &'static str = "order_created";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderCancelled {
    order_id: String,
    reason: String,
}
impl DomainEvent for OrderCancelled {
    const EVENT_TYPE: &'static str = "order_cancelled";
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    run(&longshore::Config::from_env()).await
}

/// The whole demo on `config`'s backend; `Err` unless the outcome is the expected one.
pub async fn run(config: &longshore::Config) -> Result<(), BoxError> {
    let ls = longshore::connect_with(config).await?;
    println!("backend: {} ({})", ls.backend, ls.url());

    // Unique names per run, so runs against a real broker never see each other's leftovers.
    let run = uuid_suffix();
    let subscription = format!("order-service-{run}");
    let topics = format!("shop{run}.orders.#");

    // The dead-letter queue is read back at the end; subscribe first so it is kept.
    let mut dead_letters = ls
        .subscriber
        .subscribe(&Subscription::dead_letters_of(&subscription))
        .await?;

    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let flaky_attempts = Arc::new(AtomicU32::new(0));
    let (created_tx, cancelled_tx) = (done_tx.clone(), done_tx);
    let attempts = flaky_attempts.clone();
    let consumer = Consumer::new(
        ls.subscriber.clone(),
        Subscription::new(subscription.clone(), [topics]),
    )
    // One at a time keeps the printout in publish order; raise it for throughput.
    .concurrency(1)
    .retry(RetryPolicy::exponential(3, Duration::from_millis(50)))
    .on(move |order: OrderCreated, ctx: HandlerContext| {
        let tx = created_tx.clone();
        async move {
            println!(
                "handled order_created {} for {} ({} cents), attempt {}",
                order.order_id, order.customer, order.total_cents, ctx.attempt
            );
            let _ = tx.send(order.order_id);
            Ok(())
        }
    })
    .on(move |cancel: OrderCancelled, ctx: HandlerContext| {
        let (tx, attempts) = (cancelled_tx.clone(), attempts.clone());
        async move {
            if cancel.order_id == "o-3" {
                // The refund service is down for this order: a transient error, retried
                // with backoff until the attempts run out, then dead-lettered.
                attempts.fetch_add(1, Ordering::SeqCst);
                println!(
                    "order_cancelled {}: refund service unavailable (attempt {})",
                    cancel.order_id, ctx.attempt
                );
                return Err(HandlerError::transient("refund service unavailable"));
            }
            println!(
                "handled order_cancelled {} ({})",
                cancel.order_id, cancel.reason
            );
            let _ = tx.send(cancel.order_id);
            Ok(())
        }
    })
    .start()
    .await?;

    // Record the events in the store (one stream per order), then publish them.
    let store = match ls.store() {
        Ok(store) => store,
        Err(e) => {
            // This broker has no store of its own and LONGSHORE_STORE_URL is not set: say so
            // and keep this demo's history in memory.
            println!("note: {e}; using an in-memory store for this run");
            Arc::new(longshore::memory::MemoryStore::new()) as Arc<dyn EventStore>
        }
    };
    let publisher = EventPublisher::new(ls.publisher.clone());
    let orders = [
        ("o-1", "ada", 1250),
        ("o-2", "grace", 990),
        ("o-3", "alan", 4200),
    ];
    for (id, customer, total) in orders {
        let created = Event::from_typed(&OrderCreated {
            order_id: id.into(),
            customer: customer.into(),
            total_cents: total,
        })?
        .with_aggregate_id(format!("order-{id}-{run}"));
        store
            .append(
                &format!("order-{id}-{run}"),
                ExpectedVersion::NoStream,
                vec![created.clone()],
            )
            .await?;
        publisher
            .publish_to(&format!("shop{run}.orders.created"), &created)
            .await?;
    }
    for (id, reason) in [("o-2", "out of stock"), ("o-3", "customer request")] {
        let stream = format!("order-{id}-{run}");
        let cancelled = Event::from_typed(&OrderCancelled {
            order_id: id.into(),
            reason: reason.into(),
        })?
        .with_aggregate_id(stream.clone());
        store
            .append(&stream, ExpectedVersion::Exact(1), vec![cancelled.clone()])
            .await?;
        publisher
            .publish_to(&format!("shop{run}.orders.cancelled"), &cancelled)
            .await?;
    }
    println!("published 5 events");

    // 3 created + 1 cancelled succeed; the third cancellation fails into the DLQ.
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(60), done_rx.recv())
            .await?
            .ok_or("consumer stopped")?;
    }
    let dead =
        tokio::time::timeout(Duration::from_secs(60), futures_next(&mut dead_letters)).await??;
    println!(
        "dead letter: {} reason={:?} topic={:?} attempts={:?}",
        dead.message().id,
        dead.message().headers.get(longshore::HEADER_DLQ_REASON),
        dead.message().headers.get(longshore::HEADER_DLQ_TOPIC),
        dead.message().headers.get(longshore::HEADER_DLQ_ATTEMPTS),
    );
    dead.ack().await?;

    let stats = consumer.shutdown(Duration::from_secs(10)).await;
    println!(
        "consumer: received={} acked={} retried={} dead_lettered={}",
        stats.received, stats.acked, stats.retried, stats.dead_lettered
    );

    let history = store
        .read_stream(&format!("order-o-3-{run}"), 1, 100)
        .await?;
    for r in &history {
        println!(
            "store order-o-3 v{} {} {} at {}",
            r.version, r.event.event_type, r.event.id, r.event.timestamp
        );
    }
    ls.publisher.close().await?;
    ls.subscriber.close().await?;

    let ok = stats.acked == 4
        && stats.dead_lettered == 1
        && history.len() == 2
        && flaky_attempts.load(Ordering::SeqCst) == 3;
    if !ok {
        return Err("unexpected outcome".into());
    }
    println!("ok");
    Ok(())
}

async fn futures_next(
    stream: &mut longshore::DeliveryStream,
) -> Result<longshore::Delivery, BoxError> {
    use futures::StreamExt;
    Ok(stream.next().await.ok_or("dead-letter stream ended")??)
}

fn uuid_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}
