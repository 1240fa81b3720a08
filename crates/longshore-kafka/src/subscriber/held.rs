//! Messages a consumer thread holds until a due time: copies read from the delay topic before
//! their time, and local delayed nacks (when the copy could not be stored). Kept in a min-heap
//! by due time, since a consumer may hold many of them (one per delayed nack pending) and the
//! thread looks at the earliest one on every turn of its loop.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::command::Pending;

/// One held message; ordered by due time, then by arrival (first held, first released).
struct Held {
    at: Instant,
    seq: u64,
    pending: Pending,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Held {}

impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The held messages of one consumer thread.
#[derive(Default)]
pub(super) struct HeldQueue {
    heap: BinaryHeap<Reverse<Held>>,
    seq: u64,
}

impl HeldQueue {
    /// Holds `pending` until `at`.
    pub fn push(&mut self, at: Instant, pending: Pending) {
        self.seq = self.seq.wrapping_add(1);
        self.heap.push(Reverse(Held {
            at,
            seq: self.seq,
            pending,
        }));
    }

    /// The next message due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<Pending> {
        if self.heap.peek()?.0.at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(h)| h.pending)
    }

    /// How long until the earliest message is due (zero if one is), if any is held.
    pub fn until_next(&self, now: Instant) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse(h)| h.at.saturating_duration_since(now))
    }

    /// Forgets everything held (their offsets were never stored: the broker redelivers).
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::{Packed, Parts};

    fn pending(offset: i64) -> Pending {
        let parts = Parts {
            kafka_topic: "t",
            partition: 0,
            offset,
            payload: b"",
            key: None,
            id: None,
            topic: None,
        };
        Pending {
            tp: ("t".into(), 0),
            epoch: 1,
            offset,
            attempt: 1,
            packed: Packed::pack(&parts, std::iter::empty()),
        }
    }

    #[test]
    fn released_by_due_time_then_arrival() {
        let now = Instant::now();
        let mut q = HeldQueue::default();
        q.push(now + Duration::from_secs(2), pending(1));
        q.push(now + Duration::from_secs(1), pending(2));
        q.push(now + Duration::from_secs(1), pending(3));
        assert_eq!(q.until_next(now), Some(Duration::from_secs(1)));
        assert!(q.pop_due(now).is_none());
        let later = now + Duration::from_secs(1);
        let order: Vec<i64> = std::iter::from_fn(|| q.pop_due(later))
            .map(|p| p.offset)
            .collect();
        assert_eq!(order, vec![2, 3]);
        assert_eq!(
            q.pop_due(now + Duration::from_secs(3)).map(|p| p.offset),
            Some(1)
        );
        assert_eq!(q.until_next(now), None);
    }
}
