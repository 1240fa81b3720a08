//! Ordering by key, batch handlers and flow control, on the in-memory backend (no broker):
//!     cargo run --example ordered_batches
//!
//! Account events are handled in order per account (accounts in parallel); audit events are
//! written in batches of up to 50, each element settled by its own outcome; the consumer is
//! paused and resumed, and a circuit breaker guards the downstream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longshore::memory::MemoryBroker;
use longshore::prelude::*;
use longshore::{Broker, CircuitBreaker};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposited {
    account: String,
    seq: u32,
    cents: u64,
}
impl DomainEvent for Deposited {
    const EVENT_TYPE: &'static str = "deposited";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuditLine {
    line: u32,
}
impl DomainEvent for AuditLine {
    const EVENT_TYPE: &'static str = "audit_line";
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let broker = MemoryBroker::default();
    let events = EventPublisher::new(broker.publisher());
    let subscription = Subscription::new("ledger", ["events.#"]);

    // Per account: the sequence numbers in the order they were handled.
    let ledger: Arc<Mutex<HashMap<String, Vec<u32>>>> = Arc::default();
    let audited = Arc::new(Mutex::new(Vec::<usize>::new()));
    // Each handled event reports here, so main knows when all 180 are done.
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let (log, sizes, done_batch) = (ledger.clone(), audited.clone(), done_tx.clone());
    let consumer = Consumer::new(broker.subscriber(), subscription)
        // Same key (the aggregate id) one after another; up to 16 keys at once.
        .ordered_by_key()
        .concurrency(16)
        .on(move |d: Deposited, _| {
            let (log, done) = (log.clone(), done_tx.clone());
            async move {
                let mut ledger = log
                    .lock()
                    .map_err(|_| HandlerError::permanent("poisoned"))?;
                ledger.entry(d.account).or_default().push(d.seq);
                let _ = done.send(1);
                Ok(())
            }
        })
        // Up to 50 lines per call, or what came within 20 ms; one outcome per line.
        .on_batch(
            50,
            Duration::from_millis(20),
            move |lines: Vec<(AuditLine, _)>| {
                let (sizes, done) = (sizes.clone(), done_batch.clone());
                async move {
                    if let Ok(mut sizes) = sizes.lock() {
                        sizes.push(lines.len());
                    }
                    let _ = done.send(lines.len());
                    lines.iter().map(|_| Ok(())).collect()
                }
            },
        )
        // Five transient failures in a row: stop fetching for 2 s, then probe.
        .circuit_breaker(CircuitBreaker::new(5, Duration::from_secs(2)))
        .rate_limit(50_000.0)
        .start()
        .await?;

    consumer.pause();
    for seq in 0..20 {
        for account in ["acc-1", "acc-2", "acc-3"] {
            let deposit = Deposited {
                account: account.into(),
                seq,
                cents: 100,
            };
            events.publish_typed(&deposit, Some(account)).await?;
        }
    }
    for line in 0..120 {
        events.publish_typed(&AuditLine { line }, None).await?;
    }
    println!("paused: {:?}", consumer.health());
    consumer.resume();

    let mut handled = 0;
    while handled < 180 {
        handled += done.recv().await.ok_or("consumer stopped")?;
    }
    let stats = consumer.shutdown(Duration::from_secs(5)).await;
    let ledger = ledger.lock().map_err(|_| "poisoned")?;
    for (account, seqs) in ledger.iter() {
        let in_order = seqs.windows(2).all(|w| w[0] < w[1]);
        println!("{account}: {} deposits, in order: {in_order}", seqs.len());
    }
    println!(
        "audit batches: {:?}",
        audited.lock().map_err(|_| "poisoned")?
    );
    println!("acked {}, batches {}", stats.acked, stats.batches);
    Ok(())
}
