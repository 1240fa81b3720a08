//! The state one consumer's thread shares with librdkafka's rebalance callbacks and with its
//! ackers: offsets per assigned partition, positions to store, the assignment.

use std::collections::{HashMap, HashSet};

use longshore_core::Error;
use tokio::sync::oneshot;

use crate::offsets::{Offsets, Tp};

/// State shared by the consumer thread, its rebalance callbacks (same thread) and its ackers
/// (which settle offsets here directly, on any thread).
pub(crate) struct GroupState {
    pub offsets: Offsets,
    /// Positions to hand to the offset store at the next flush (one call for many acks).
    pub to_store: HashMap<Tp, i64>,
    pub assigned: HashSet<Tp>,
    /// Every assigned partition is to stay paused (the stream is gone).
    pub paused_all: bool,
    /// Told about the first assignment (or the failure to subscribe).
    pub joined: Option<oneshot::Sender<Result<(), Error>>>,
    /// The subscription's name, for logs.
    pub name: String,
    /// The consumer is closing: its last offsets are stored, later settlements are refused.
    pub closed: bool,
}

impl GroupState {
    /// A member of subscription `name` that has not joined yet.
    pub fn new(name: String, joined: oneshot::Sender<Result<(), Error>>) -> Self {
        GroupState {
            offsets: Offsets::default(),
            to_store: HashMap::new(),
            assigned: HashSet::new(),
            paused_all: false,
            joined: Some(joined),
            name,
            closed: false,
        }
    }

    /// The message at `offset` is done: queue the partition's new position, if it moved.
    /// `Err(Closed)` once the consumer is closing (its offsets can no longer be committed).
    pub fn settle(&mut self, tp: Tp, epoch: u64, offset: i64) -> Result<(), Error> {
        if self.closed {
            return Err(Error::Closed("kafka consumer"));
        }
        if let Some(pos) = self.offsets.settled(&tp, epoch, offset) {
            self.to_store.insert(tp, pos);
        }
        Ok(())
    }

    /// Tells the subscribe call how joining went (once).
    pub fn report_joined(&mut self, result: Result<(), Error>) {
        if let Some(j) = self.joined.take() {
            let _ = j.send(result);
        }
    }
}
