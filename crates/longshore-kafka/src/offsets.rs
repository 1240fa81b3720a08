//! Per-partition tracking of settled offsets: the committed position never passes a message
//! that is still unsettled.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A partition of a Kafka topic (topic names are shared, not copied per message).
pub(crate) type Tp = (Arc<str>, i32);

/// One assigned partition.
#[derive(Debug)]
struct Track {
    /// Assignment generation: settlements of an older generation (before a revoke) are ignored.
    epoch: u64,
    /// Offsets handed out (or waiting for redelivery) and not settled yet.
    outstanding: BTreeSet<i64>,
    /// One past the highest offset seen in this generation (`None` before the first message).
    next: Option<i64>,
    /// The last position handed to the offset store.
    stored: Option<i64>,
}

impl Track {
    fn position(&self) -> Option<i64> {
        self.outstanding.first().copied().or(self.next)
    }
}

/// The offsets of every currently assigned partition of one consumer.
#[derive(Debug, Default)]
pub(crate) struct Offsets {
    tracks: HashMap<Tp, Track>,
    epochs: u64,
}

impl Offsets {
    /// A partition was assigned: starts a new generation for it and returns its epoch.
    pub fn assign(&mut self, tp: Tp) -> u64 {
        self.epochs += 1;
        let epoch = self.epochs;
        self.tracks.insert(
            tp,
            Track {
                epoch,
                outstanding: BTreeSet::new(),
                next: None,
                stored: None,
            },
        );
        epoch
    }

    /// A partition was revoked: everything still outstanding on it is forgotten (its offsets
    /// will not be stored; the next owner reads from the last committed position).
    pub fn revoke(&mut self, tp: &Tp) {
        self.tracks.remove(tp);
    }

    /// The current epoch of `tp`, if it is assigned.
    pub fn epoch(&self, tp: &Tp) -> Option<u64> {
        self.tracks.get(tp).map(|t| t.epoch)
    }

    /// Whether `epoch` is still the current generation of `tp`.
    pub fn is_current(&self, tp: &Tp, epoch: u64) -> bool {
        self.epoch(tp) == Some(epoch)
    }

    /// A message at `offset` was fetched and is now outstanding. Returns its epoch, or `None`
    /// when the partition is not assigned (a stale fetch, to be dropped).
    pub fn fetched(&mut self, tp: &Tp, offset: i64) -> Option<u64> {
        let t = self.tracks.get_mut(tp)?;
        t.outstanding.insert(offset);
        // Where this generation started reading: nothing below needs storing.
        t.stored.get_or_insert(offset);
        t.next = Some(t.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Some(t.epoch)
    }

    /// The message at `offset` is settled (acked, dead-lettered, or skipped). Returns the new
    /// position to store when it moved forward, i.e. when every message before it is settled.
    pub fn settled(&mut self, tp: &Tp, epoch: u64, offset: i64) -> Option<i64> {
        let t = self.tracks.get_mut(tp).filter(|t| t.epoch == epoch)?;
        if !t.outstanding.remove(&offset) {
            return None;
        }
        let pos = t.position()?;
        if t.stored.is_some_and(|s| s >= pos) {
            return None;
        }
        t.stored = Some(pos);
        Some(pos)
    }

    /// Unsettled messages across all partitions.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.tracks.values().map(|t| t.outstanding.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> Tp {
        ("t".into(), 0)
    }

    #[test]
    fn never_passes_an_unsettled_offset() {
        let mut o = Offsets::default();
        let e = o.assign(tp());
        for off in 10..15 {
            assert_eq!(o.fetched(&tp(), off), Some(e));
        }
        // 11..14 settle first: nothing may be stored past 10.
        for off in 11..15 {
            assert_eq!(o.settled(&tp(), e, off), None);
        }
        assert_eq!(o.settled(&tp(), e, 10), Some(15));
        assert_eq!(o.outstanding(), 0);
    }

    #[test]
    fn contiguous_prefix_moves_with_gaps() {
        let mut o = Offsets::default();
        let e = o.assign(tp());
        // Offsets need not be contiguous (compaction, transaction markers).
        o.fetched(&tp(), 3);
        o.fetched(&tp(), 7);
        o.fetched(&tp(), 9);
        assert_eq!(o.settled(&tp(), e, 3), Some(7));
        assert_eq!(o.settled(&tp(), e, 9), None);
        assert_eq!(o.settled(&tp(), e, 7), Some(10));
        assert_eq!(o.settled(&tp(), e, 7), None, "settling twice is a no-op");
    }

    #[test]
    fn revoked_generation_is_ignored() {
        let mut o = Offsets::default();
        let e1 = o.assign(tp());
        o.fetched(&tp(), 0);
        o.revoke(&tp());
        assert_eq!(o.settled(&tp(), e1, 0), None);
        let e2 = o.assign(tp());
        assert_ne!(e1, e2);
        o.fetched(&tp(), 0);
        assert_eq!(o.settled(&tp(), e1, 0), None, "old generation");
        assert_eq!(o.settled(&tp(), e2, 0), Some(1));
        assert_eq!(o.fetched(&("x".into(), 1), 5), None, "unassigned");
    }
}
