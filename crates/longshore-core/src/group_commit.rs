//! Group commit: concurrent single publishes (or acks) share one write.
//!
//! On a SQL backend every `publish` is a transaction, and a commit costs a disk sync (or, on
//! Postgres, a WAL flush and a NOTIFY). A web service publishes from many request handlers
//! at once, one event each: written one transaction per call, they queue behind each other's
//! commits. [`GroupCommit`] lets them share: each caller queues its item, and whoever holds
//! one of a few flush permits takes everything queued (up to a maximum) and writes it in one
//! go, then tells each caller its own outcome. A caller alone pays one task hop; callers that
//! arrive while a write is in progress ride on the next one. Nothing is held across the
//! caller's wait but its place in the queue.
//!
//! With more than one permit, a write takes only its share of the items queued or being
//! written: their number divided by the permits. Taking everything left the other permits
//! nothing to write: every caller was in the one write, so writes ran one at a time and the
//! client's work never overlapped the server's (BENCHMARKS.md, "Postgres at 512 callers").
//! With one permit the share is everything pending, so a single writer still takes all that
//! is queued.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Semaphore};

use crate::{Error, Message};

/// One queued item and where its outcome goes.
struct Waiting<T> {
    item: T,
    done: oneshot::Sender<Result<(), Error>>,
}

/// Shares writes between concurrent callers; see the [module docs](self).
pub struct GroupCommit<T> {
    backend: &'static str,
    queue: Mutex<VecDeque<Waiting<T>>>,
    flushers: Semaphore,
    /// The number of permits `flushers` was made with.
    writers: usize,
    /// Items queued or being written: counted when queued, uncounted once answered.
    pending: Arc<AtomicUsize>,
    max_batch: usize,
}

impl<T> std::fmt::Debug for GroupCommit<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("backend", &self.backend)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> GroupCommit<T> {
    /// At most `flushers` writes at once, each of at most `max_batch` items (both at least 1).
    pub fn new(backend: &'static str, flushers: usize, max_batch: usize) -> Self {
        let writers = flushers.max(1);
        GroupCommit {
            backend,
            queue: Mutex::new(VecDeque::new()),
            flushers: Semaphore::new(writers),
            writers,
            pending: Arc::default(),
            max_batch: max_batch.max(1),
        }
    }

    /// Queues `item` and returns the outcome of the write that carried it.
    ///
    /// `flush` writes a batch and returns one outcome per item, in order. It runs in a task of
    /// its own, so a caller that stops waiting never abandons the other callers' batch.
    pub async fn submit<F, Fut>(&self, item: T, flush: F) -> Result<(), Error>
    where
        F: Fn(Vec<T>) -> Fut,
        Fut: Future<Output = Vec<Result<(), Error>>> + Send + 'static,
    {
        let (done, mut outcome) = oneshot::channel();
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.lock().push_back(Waiting { item, done });
        loop {
            let permit = tokio::select! {
                biased;
                result = &mut outcome => return self.received(result),
                permit = self.flushers.acquire() => permit,
            };
            let batch = {
                let mut queue = self.lock();
                let n = queue.len().min(self.share());
                queue.drain(..n).collect::<Vec<_>>()
            };
            if batch.is_empty() {
                // Another flusher took this caller's item: its outcome is on the way.
                drop(permit);
                return self.received((&mut outcome).await);
            }
            let (items, dones): (Vec<T>, Vec<_>) =
                batch.into_iter().map(|w| (w.item, w.done)).unzip();
            let write = flush(items);
            let answered = Answered(self.pending.clone(), dones.len());
            let task = tokio::spawn(async move {
                let results = write.await;
                drop(answered);
                for (done, result) in dones.into_iter().zip(results) {
                    let _ = done.send(result);
                }
            });
            // The permit is held until the write ends: at most `flushers` at once.
            let _ = task.await;
            drop(permit);
        }
    }

    /// The most one write takes: the items queued or being written, divided among the
    /// permits, so every permit has a batch of its own (at least 1, at most `max_batch`).
    fn share(&self) -> usize {
        self.pending
            .load(Ordering::Acquire)
            .div_ceil(self.writers)
            .clamp(1, self.max_batch)
    }

    fn received(
        &self,
        result: Result<Result<(), Error>, oneshot::error::RecvError>,
    ) -> Result<(), Error> {
        // A write that panicked or returned too few outcomes: the item may or may not be
        // stored, so the caller hears it was not confirmed (and may publish it again).
        result.unwrap_or_else(|_| {
            Err(Error::connection(
                self.backend,
                "the shared write carrying this call ended without an outcome",
            ))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<T>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Uncounts a write's items from `pending` when dropped: when the write ends, or panics.
struct Answered(Arc<AtomicUsize>, usize);

impl Drop for Answered {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
    }
}

/// The runs of one topic in a gathered batch, in order, each with its messages: what a SQL
/// adapter writes as one statement each.
pub fn topic_runs(items: &[(String, Message)]) -> Vec<(&str, Vec<&Message>)> {
    let mut runs: Vec<(&str, Vec<&Message>)> = Vec::new();
    for (topic, message) in items {
        match runs.last_mut() {
            Some((t, messages)) if *t == topic.as_str() => messages.push(message),
            _ => runs.push((topic.as_str(), vec![message])),
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_writes_and_hear_their_own_outcome() {
        let group = Arc::new(GroupCommit::<usize>::new("test", 1, 1_000));
        let mut callers = Vec::new();
        for i in 0..500 {
            let group = group.clone();
            callers.push(tokio::spawn(async move {
                group
                    .submit(i, |items: Vec<usize>| async move {
                        tokio::task::yield_now().await;
                        items
                            .into_iter()
                            .map(|i| {
                                if i % 7 == 0 {
                                    Err(Error::Config(format!("refused {i}")))
                                } else {
                                    Ok(())
                                }
                            })
                            .collect()
                    })
                    .await
            }));
        }
        for (i, c) in callers.into_iter().enumerate() {
            let result = c.await.expect("caller");
            assert_eq!(result.is_err(), i % 7 == 0, "caller {i}: {result:?}");
        }
    }

    /// The sizes of the writes that `callers` concurrent callers of a group with `writers`
    /// permits made, on one thread (so the order of events repeats from run to run).
    async fn write_sizes(writers: usize, callers: usize) -> Vec<usize> {
        let group = Arc::new(GroupCommit::<usize>::new("test", writers, 1_000));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..callers {
            let (group, sizes) = (group.clone(), sizes.clone());
            tasks.push(tokio::spawn(async move {
                group
                    .submit(i, |items: Vec<usize>| {
                        sizes.lock().expect("sizes").push(items.len());
                        async move {
                            tokio::task::yield_now().await;
                            items.iter().map(|_| Ok(())).collect()
                        }
                    })
                    .await
            }));
        }
        for task in tasks {
            task.await.expect("caller").expect("written");
        }
        let sizes = sizes.lock().expect("sizes").clone();
        assert_eq!(sizes.iter().sum::<usize>(), callers, "{sizes:?}");
        sizes
    }

    #[tokio::test]
    async fn with_two_writers_a_write_takes_half_of_what_is_pending() {
        // The first two callers each write alone; the other 98 queue meanwhile. Taking all
        // of them in the next write would leave the second permit nothing to write.
        let sizes = write_sizes(2, 100).await;
        assert!(sizes.iter().all(|&n| n <= 50), "{sizes:?}");
        // …and shares are taken whole, not item by item.
        assert!(sizes.len() <= 6, "{sizes:?}");
    }

    #[tokio::test]
    async fn a_single_writer_takes_everything_queued() {
        let sizes = write_sizes(1, 100).await;
        assert_eq!(sizes, [1, 99]);
    }

    #[test]
    fn topic_runs_keep_order_and_split_on_each_change() {
        let items: Vec<(String, Message)> = ["a", "a", "b", "a"]
            .iter()
            .map(|t| (t.to_string(), Message::new(t.as_bytes().to_vec())))
            .collect();
        let runs: Vec<(&str, usize)> = topic_runs(&items)
            .into_iter()
            .map(|(t, ms)| (t, ms.len()))
            .collect();
        assert_eq!(runs, [("a", 2), ("b", 1), ("a", 1)]);
    }

    #[tokio::test]
    async fn a_write_without_an_outcome_is_an_error() {
        let group = GroupCommit::<u8>::new("test", 1, 10);
        let result = group.submit(1, |_items| async { Vec::new() }).await;
        assert!(
            matches!(result, Err(Error::Connection { .. })),
            "{result:?}"
        );
    }
}
