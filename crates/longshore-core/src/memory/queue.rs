//! One subscription's bounded queue and the bookkeeping that wakes its consumers and
//! publishers only when someone is actually parked on it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::message::Message;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-update of plain data; the data is
    // still consistent for our operations, so keep serving rather than cascading panics.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A message waiting in (or handed out from) a queue.
pub(super) struct Entry {
    pub(super) message: Message,
    /// Shared by every message of a batch, so queuing one costs no string allocation.
    pub(super) topic: Arc<str>,
    pub(super) attempt: u32,
}

/// Tasks parked on one [`Notify`]. A waker clears `count` and bumps `epoch` when it notifies,
/// so every later push or settle skips the notify until someone parks again; a parked task
/// that leaves without being woken (cancelled, or woken by something else) takes itself back
/// out only if its epoch is still current.
#[derive(Default)]
pub(super) struct Parked {
    count: usize,
    epoch: u64,
}

impl Parked {
    fn park(&mut self) -> u64 {
        self.count += 1;
        self.epoch
    }

    fn leave(&mut self, epoch: u64) {
        if self.epoch == epoch {
            self.count -= 1;
        }
    }

    /// Whether anyone must be woken; if so they are all considered woken from now on.
    fn take(&mut self) -> bool {
        if self.count == 0 {
            return false;
        }
        self.count = 0;
        self.epoch += 1;
        true
    }
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) ready: VecDeque<Entry>,
    /// Messages handed out (or waiting out a nack delay) and not yet settled.
    pub(super) outstanding: usize,
    consumers: Parked,
    publishers: Parked,
}

impl QueueState {
    pub(super) fn depth(&self) -> usize {
        self.ready.len() + self.outstanding
    }

    /// Takes the next ready message, handing it out.
    pub(super) fn pop(&mut self) -> Option<Entry> {
        let entry = self.ready.pop_front()?;
        self.outstanding += 1;
        self.shrink_when_drained();
        Some(entry)
    }

    /// Gives back memory once a large backlog has drained: the buffer halves whenever it is
    /// less than a quarter full, so the copying stays amortised O(1) per message.
    fn shrink_when_drained(&mut self) {
        const KEEP: usize = 4096;
        let capacity = self.ready.capacity();
        if capacity > KEEP && self.ready.len() < capacity / 4 {
            self.ready.shrink_to((capacity / 2).max(KEEP));
        }
    }
}

pub(super) struct Queue {
    pub(super) name: String,
    pub(super) patterns: Mutex<Vec<String>>,
    pub(super) state: Mutex<QueueState>,
    /// Woken when a message becomes ready for consumers parked on an empty queue.
    ready: Notify,
    /// Woken when room frees up for publishers parked on a full queue.
    room: Notify,
}

/// Which side of the queue a task is parked on.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Consumer,
    Publisher,
}

/// A task's place among the parked; leaving (woken or cancelled) takes it out again.
pub(super) struct Parking<'a> {
    queue: &'a Queue,
    side: Side,
    epoch: u64,
}

impl Drop for Parking<'_> {
    fn drop(&mut self) {
        let mut s = lock(&self.queue.state);
        match self.side {
            Side::Consumer => s.consumers.leave(self.epoch),
            Side::Publisher => s.publishers.leave(self.epoch),
        }
    }
}

impl Queue {
    pub(super) fn new(name: &str) -> Self {
        Queue {
            name: name.to_string(),
            patterns: Mutex::new(Vec::new()),
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
            room: Notify::new(),
        }
    }

    /// The future a task of `side` awaits; pass it, enabled, to [`Queue::park`].
    pub(super) fn notified(&self, side: Side) -> Notified<'_> {
        match side {
            Side::Consumer => self.ready.notified(),
            Side::Publisher => self.room.notified(),
        }
    }

    /// Records a task as parked. Call under the state lock, after enabling its `Notified` and
    /// finding nothing to do: a waker that sees the record then is sure to reach that future.
    pub(super) fn park<'a>(&'a self, state: &mut QueueState, side: Side) -> Parking<'a> {
        let epoch = match side {
            Side::Consumer => state.consumers.park(),
            Side::Publisher => state.publishers.park(),
        };
        Parking {
            queue: self,
            side,
            epoch,
        }
    }

    /// Call under the state lock after making messages ready; if it returns true, call
    /// [`Queue::wake_consumers`] once the lock is released.
    pub(super) fn consumers_to_wake(state: &mut QueueState) -> bool {
        state.consumers.take()
    }

    pub(super) fn wake_consumers(&self) {
        self.ready.notify_waiters();
    }

    /// A handed-out message is done with (acked or dead-lettered): its room is free again.
    pub(super) fn settle(&self) {
        let mut s = lock(&self.state);
        s.outstanding = s.outstanding.saturating_sub(1);
        let wake = s.publishers.take();
        drop(s);
        if wake {
            self.room.notify_waiters();
        }
    }

    /// Puts a handed-out message back at the head, so an in-order consumer sees it next.
    pub(super) fn requeue(&self, entry: Entry) {
        let mut s = lock(&self.state);
        s.outstanding = s.outstanding.saturating_sub(1);
        s.ready.push_front(entry);
        let wake = s.consumers.take();
        drop(s);
        if wake {
            self.wake_consumers();
        }
    }
}
