//! Key lanes: which taken deliveries may run now. A delivery whose key has one in flight waits
//! behind it, in delivery order; everything else is ready at once for the worker pool.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit};

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
    /// Jobs any worker may run now. A plain locked queue and one `Notify`: a job made ready
    /// wakes at most one parked worker, and a worker that finishes one takes the next without
    /// parking. (A channel behind an async mutex woke two tasks per job: the receiver, then
    /// the next worker in line for the mutex.)
    ready: Mutex<VecDeque<Job>>,
    ready_signal: Notify,
}

impl Lanes {
    /// Lanes that order by key when `ordered`, else a plain shared queue.
    pub fn new(ordered: bool) -> Self {
        Lanes {
            ordered,
            hasher: RandomState::new(),
            busy: Mutex::new(HashMap::new()),
            ready: Mutex::new(VecDeque::new()),
            ready_signal: Notify::new(),
        }
    }

    /// Wraps a taken delivery. Keys are hashed (no copy of the key per message): two keys with
    /// the same 64-bit hash would share a lane, which costs parallelism, never order.
    pub fn job(&self, delivery: Delivery, permit: OwnedSemaphorePermit) -> Job {
        let key = match (&delivery.message().key, self.ordered) {
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
        self.make_ready(job);
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
                drop(busy);
                self.make_ready(job);
            }
            None => {
                busy.remove(&key);
            }
        }
    }

    /// The next ready job (cancel-safe: a job is taken only when this resolves).
    pub async fn next(&self) -> Job {
        // A busy pool finds a job waiting: take it without registering for the signal.
        if let Some(job) = lock(&self.ready).pop_front() {
            return job;
        }
        loop {
            // Registered before looking, so a job made ready in between is not missed.
            let signal = self.ready_signal.notified();
            tokio::pin!(signal);
            signal.as_mut().enable();
            if let Some(job) = lock(&self.ready).pop_front() {
                return job;
            }
            signal.await;
        }
    }

    /// Everything not started, ready ones first, each key's in delivery order: what shutdown
    /// gives back to the broker.
    pub fn take_all(&self) -> Vec<Job> {
        let mut jobs: Vec<Job> = lock(&self.ready).drain(..).collect();
        for (_, waiting) in self.lock().drain() {
            jobs.extend(waiting);
        }
        jobs
    }

    fn make_ready(&self, job: Job) {
        lock(&self.ready).push_back(job);
        self.ready_signal.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, VecDeque<Job>>> {
        lock(&self.busy)
    }
}

/// Both locks stay consistent even if a holder panicked: every change is one call.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
