//! Key lanes: which taken deliveries may run now. A delivery whose key has one in flight waits
//! behind it, in delivery order; everything else is ready at once for the worker pool.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;

use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::subscriber::Delivery;

/// One taken delivery, until it is settled.
pub(crate) struct Job {
    pub delivery: Delivery,
    /// The hash of the message key when the consumer orders by key; `None` runs unordered.
    pub key: Option<u64>,
    /// A slot of the consumer's in-flight bound, given back when the job is dropped.
    pub permit: OwnedSemaphorePermit,
}

/// The ready queue the workers take from, and the keys in flight with what waits behind them.
pub(crate) struct Lanes {
    ordered: bool,
    hasher: RandomState,
    /// A key is here exactly while one of its messages is in flight (running, in a batch, or
    /// waiting for a retry); its queue holds the later ones, in delivery order.
    busy: Mutex<HashMap<u64, VecDeque<Job>>>,
    ready_tx: mpsc::UnboundedSender<Job>,
    ready_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>,
}

impl Lanes {
    /// Lanes that order by key when `ordered`, else a plain shared queue.
    pub fn new(ordered: bool) -> Self {
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        Lanes {
            ordered,
            hasher: RandomState::new(),
            busy: Mutex::new(HashMap::new()),
            ready_tx,
            ready_rx: tokio::sync::Mutex::new(ready_rx),
        }
    }

    /// Wraps a taken delivery. Keys are hashed (no copy of the key per message): two keys with
    /// the same 64-bit hash would share a lane, which costs parallelism, never order.
    pub fn job(&self, delivery: Delivery, permit: OwnedSemaphorePermit) -> Job {
        let key = match (&delivery.message.key, self.ordered) {
            (Some(key), true) => Some(self.hasher.hash_one(key)),
            _ => None,
        };
        Job {
            delivery,
            key,
            permit,
        }
    }

    /// Makes `job` ready, or queues it behind its key's message in flight.
    pub fn admit(&self, job: Job) {
        if let Some(key) = job.key {
            let mut busy = self.lock();
            if let Some(waiting) = busy.get_mut(&key) {
                waiting.push_back(job);
                return;
            }
            busy.insert(key, VecDeque::new());
        }
        // The receiver lives as long as `self`; a send cannot fail while we are here.
        let _ = self.ready_tx.send(job);
    }

    /// Called once the job of `key` is settled: its next message (if any) becomes ready.
    pub fn release(&self, key: Option<u64>) {
        let Some(key) = key else { return };
        let mut busy = self.lock();
        let next = match busy.get_mut(&key) {
            Some(waiting) => waiting.pop_front(),
            None => return,
        };
        match next {
            Some(job) => {
                let _ = self.ready_tx.send(job);
            }
            None => {
                busy.remove(&key);
            }
        }
    }

    /// The next ready job (cancel-safe: a job is taken only when this resolves).
    pub async fn next(&self) -> Option<Job> {
        self.ready_rx.lock().await.recv().await
    }

    /// Everything not started, ready ones first, each key's in delivery order: what shutdown
    /// gives back to the broker.
    pub async fn take_all(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        {
            let mut ready = self.ready_rx.lock().await;
            while let Ok(job) = ready.try_recv() {
                jobs.push(job);
            }
        }
        for (_, waiting) in self.lock().drain() {
            jobs.extend(waiting);
        }
        jobs
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, VecDeque<Job>>> {
        // The map stays consistent even if a holder panicked: every change is one call.
        self.busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
