//! One consumer of a memory subscription and the acker of each of its deliveries.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::broker::Shared;
use super::queue::{lock, Entry, Queue, Side};
use crate::error::Error;
use crate::message::Message;
use crate::subscriber::{dead_letter_message, dead_letter_topic, Acker, DeadLetter, Delivery};

/// Set when a subscriber closes; its consumers end their streams.
pub(super) struct Closed {
    pub(super) flag: AtomicBool,
    pub(super) notify: Notify,
}

/// What a consumer shares with the ackers of its deliveries (one `Arc` per delivery).
struct Slots {
    queue: Arc<Queue>,
    shared: Arc<Shared>,
    in_flight: AtomicUsize,
    prefetch: usize,
    /// Stores a permit when a settle frees a slot of a full prefetch, so the consumer can
    /// never miss it, and costs nothing otherwise.
    freed: Notify,
}

impl Slots {
    fn release(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) >= self.prefetch {
            self.freed.notify_one();
        }
    }
}

pub(super) struct Consumer {
    slots: Arc<Slots>,
    closed: Arc<Closed>,
}

impl Consumer {
    pub(super) fn new(
        queue: Arc<Queue>,
        shared: Arc<Shared>,
        prefetch: usize,
        closed: Arc<Closed>,
    ) -> Self {
        Consumer {
            slots: Arc::new(Slots {
                queue,
                shared,
                in_flight: AtomicUsize::new(0),
                prefetch,
                freed: Notify::new(),
            }),
            closed,
        }
    }

    fn deliver(&self, entry: Entry) -> Delivery {
        self.slots.in_flight.fetch_add(1, Ordering::AcqRel);
        let Entry {
            message,
            topic,
            attempt,
        } = entry;
        // The acker keeps its own copy so that an unsettled drop can requeue the message
        // (payload bytes are shared, not copied).
        let acker = MemoryAcker {
            entry: Some(Entry {
                message: message.clone(),
                topic: topic.clone(),
                attempt,
            }),
            slots: self.slots.clone(),
        };
        Delivery::new(message, topic.to_string(), attempt, Box::new(acker))
    }

    pub(super) async fn next(&self) -> Option<Delivery> {
        let queue = &self.slots.queue;
        loop {
            if self.closed.flag.load(Ordering::Acquire) {
                return None;
            }
            if self.slots.in_flight.load(Ordering::Acquire) >= self.slots.prefetch {
                let closed = self.closed.notify.notified();
                tokio::pin!(closed);
                closed.as_mut().enable();
                if self.closed.flag.load(Ordering::Acquire) {
                    return None;
                }
                tokio::select! {
                    _ = self.slots.freed.notified() => {}
                    _ = closed => {}
                }
                continue;
            }
            // Fast path: a message is ready, no waiter registration at all. The budget makes
            // a consumer that always finds work still yield now and then, like tokio's own
            // channels, so it cannot starve a publisher sharing its worker.
            tokio::task::consume_budget().await;
            if let Some(entry) = lock(&queue.state).pop() {
                return Some(self.deliver(entry));
            }
            let ready = queue.notified(Side::Consumer);
            let closed = self.closed.notify.notified();
            tokio::pin!(ready, closed);
            ready.as_mut().enable();
            closed.as_mut().enable();
            if self.closed.flag.load(Ordering::Acquire) {
                return None;
            }
            let parking = {
                let mut s = lock(&queue.state);
                if let Some(entry) = s.pop() {
                    drop(s);
                    return Some(self.deliver(entry));
                }
                queue.park(&mut s, Side::Consumer)
            };
            tokio::select! {
                _ = ready => {}
                _ = closed => {}
            }
            drop(parking);
        }
    }
}

struct MemoryAcker {
    /// `Some` until settled; a drop while `Some` requeues the message.
    entry: Option<Entry>,
    slots: Arc<Slots>,
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.attempt += 1;
            self.slots.release();
            self.slots.queue.requeue(entry);
        }
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        if self.entry.take().is_some() {
            self.slots.release();
            self.slots.queue.settle();
        }
        Ok(())
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let Some(mut entry) = self.entry.take() else {
            return Ok(());
        };
        entry.attempt += 1;
        self.slots.release();
        match delay {
            None | Some(Duration::ZERO) => self.slots.queue.requeue(entry),
            Some(delay) => {
                // The message stays counted as outstanding while it waits, so the queue's
                // bound holds; the prefetch slot is free for other messages meanwhile.
                let queue = self.slots.queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    queue.requeue(entry);
                });
            }
        }
        Ok(())
    }

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let queue = &self.slots.queue;
        let dlq = dead_letter_topic(&queue.name);
        let letter = dead_letter_message(message, topic, &queue.name, &dead);
        // Publish first, settle after: if the dead-letter queue refuses, the drop requeues.
        self.slots.shared.route_one(&dlq, letter).await?;
        if self.entry.take().is_some() {
            self.slots.release();
            self.slots.queue.settle();
        }
        Ok(())
    }
}
