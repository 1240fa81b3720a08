//! Counters a running consumer keeps, readable while it runs and returned at shutdown.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a consumer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub received: AtomicU64,
    pub acked: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub duplicates: AtomicU64,
    pub requeued: AtomicU64,
    pub stream_errors: AtomicU64,
    pub settle_errors: AtomicU64,
    pub batches: AtomicU64,
    pub breaker_opened: AtomicU64,
    pub deferred: AtomicU64,
    pub expired: AtomicU64,
}

impl Counters {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ConsumerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsumerStats {
            received: get(&self.received),
            acked: get(&self.acked),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            duplicates: get(&self.duplicates),
            requeued: get(&self.requeued),
            stream_errors: get(&self.stream_errors),
            settle_errors: get(&self.settle_errors),
            batches: get(&self.batches),
            breaker_opened: get(&self.breaker_opened),
            deferred: get(&self.deferred),
            expired: get(&self.expired),
        }
    }
}

/// A snapshot of a consumer's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Deliveries taken from the subscription.
    pub received: u64,
    /// Deliveries acknowledged after their handler succeeded (or unknown types, when so
    /// configured, and inbox duplicates).
    pub acked: u64,
    /// Handler attempts that failed transiently and were retried.
    pub retried: u64,
    /// Deliveries sent to the dead-letter queue.
    pub dead_lettered: u64,
    /// Deliveries skipped because the inbox had already seen their id (also acked).
    pub duplicates: u64,
    /// Deliveries given back unfinished (shutdown: during a retry wait, or not yet started).
    pub requeued: u64,
    /// Errors reported by the delivery stream.
    pub stream_errors: u64,
    /// Failed ack / nack / dead-letter calls (the broker will redeliver those messages).
    pub settle_errors: u64,
    /// Calls of batch handlers.
    pub batches: u64,
    /// Times the circuit breaker opened.
    pub breaker_opened: u64,
    /// Scheduled messages that arrived before their time and were given back for the time
    /// left (backends without [`native_schedule`](crate::Capabilities::native_schedule)).
    pub deferred: u64,
    /// Messages past their expiry, dropped or dead-lettered (also counted there).
    pub expired: u64,
}
