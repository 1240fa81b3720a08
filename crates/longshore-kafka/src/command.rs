//! What a consumer thread is told over its command channel (nacks, wake-ups, topic changes,
//! close), the prefetch slots it shares with its ackers, and the unsettled delivery a nack
//! hands back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::mapping::Packed;
use crate::offsets::Tp;

/// A command to a consumer thread.
pub(crate) enum Cmd {
    /// Prefetch slots were freed: fetch again.
    Wake,
    /// Redeliver (after `delay`).
    Nack {
        pending: Pending,
        delay: Option<Duration>,
    },
    /// The Kafka topics to read changed (wildcard patterns).
    Topics(Vec<String>),
    /// End the stream and close the consumer now.
    Close,
}

/// A fetched message that is not settled yet.
#[derive(Clone)]
pub(crate) struct Pending {
    /// The partition it came from.
    pub tp: Tp,
    /// The partition's assignment generation it was fetched in.
    pub epoch: u64,
    /// Its offset in the partition.
    pub offset: i64,
    /// Deliveries so far, this one included (counted in process).
    pub attempt: u32,
    /// The record.
    pub packed: Packed,
}

/// The prefetch slots of one consumer, shared by its thread (which takes one per delivery
/// handed out) and its ackers (which free it on ack or dead letter, settling the offset
/// themselves). A freed slot wakes the thread only when the count falls to the low-water mark
/// (half the prefetch) or to zero, so the thread refills in bursts: a wake-up per ack would
/// cost a cross-thread hand-off per message (BENCHMARKS.md, "The Kafka drain").
pub(crate) struct Slots {
    taken: AtomicUsize,
    low: usize,
}

impl Slots {
    /// Slots for a prefetch of `prefetch`.
    pub fn new(prefetch: usize) -> Self {
        Slots {
            taken: AtomicUsize::new(0),
            low: prefetch / 2,
        }
    }

    /// How many deliveries are out.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    /// One more delivery is out.
    pub fn take(&self) {
        self.taken.fetch_add(1, Ordering::AcqRel);
    }

    /// One delivery is back (settled, or handed back on the command channel).
    pub fn free(&self) {
        let _ = self.free_one();
    }

    /// Frees one slot and wakes the thread over `cmd` at the low-water mark or at zero.
    pub fn free_and_wake(&self, cmd: &mpsc::Sender<Cmd>) {
        if let Some(left) = self.free_one() {
            if left == self.low || left == 0 {
                let _ = cmd.send(Cmd::Wake);
            }
        }
    }

    /// How many are left out after freeing one; `None` if none was out.
    fn free_one(&self) -> Option<usize> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()
            .map(|before| before - 1)
    }
}
