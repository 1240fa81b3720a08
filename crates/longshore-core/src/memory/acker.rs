//! Settling a memory delivery: ack, nack (with delay), dead letter, or requeue on drop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::client::Client;
use super::queue::{Entry, Queue};
use crate::error::Error;
use crate::message::Message;
use crate::subscriber::{dead_letter_message, dead_letter_topic, Acker, DeadLetter};

/// What a consumer shares with the ackers of its deliveries (one `Arc` per delivery).
pub(super) struct Slots {
    pub(super) queue: Arc<Queue>,
    pub(super) client: Arc<Client>,
    pub(super) in_flight: AtomicUsize,
    pub(super) prefetch: usize,
    /// Stores a permit when a settle frees a slot of a full prefetch, so the consumer can
    /// never miss it, and costs nothing otherwise.
    pub(super) freed: Notify,
}

impl Slots {
    pub(super) fn release(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) >= self.prefetch {
            self.freed.notify_one();
        }
    }
}

pub(super) struct MemoryAcker {
    /// The delivered message's topic and attempt: `Some` until settled.
    pub(super) pending: Option<(Arc<str>, u32)>,
    /// The delivered message, once handed back ([`Acker::hold`]) for a nack or an unsettled
    /// drop: the delivery owns it until then, so no copy is kept here.
    pub(super) message: Option<Message>,
    pub(super) slots: Arc<Slots>,
}

impl MemoryAcker {
    /// The message back as a queue entry, for another attempt.
    fn retry_entry(&mut self) -> Option<Entry> {
        let (topic, attempt) = self.pending.take()?;
        self.slots.release();
        let Some(message) = self.message.take() else {
            // Only a settlement given up half-way (its future dropped before it ran) gets
            // here: the message went with it and cannot be put back.
            tracing::warn!(queue = %self.slots.queue.name, "memory: a delivery was dropped without its message; it cannot be redelivered");
            self.slots.queue.settle();
            return None;
        };
        Some(Entry {
            message,
            topic,
            attempt: attempt.saturating_add(1),
        })
    }

    /// Done with the message (acked or dead-lettered).
    fn settled(&mut self) {
        if self.pending.take().is_some() {
            self.slots.release();
            self.slots.queue.settle();
        }
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        if let Some(entry) = self.retry_entry() {
            self.slots.queue.requeue(entry);
        }
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    fn hold(&mut self, message: Message) {
        self.message = Some(message);
    }

    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        self.settled();
        Ok(())
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let Some(entry) = self.retry_entry() else {
            return Ok(());
        };
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
        // Kept until the letter is stored: if the dead-letter queue refuses, the drop
        // requeues it (a copy on this rare path only).
        self.message = Some(message.clone());
        let letter = dead_letter_message(message, topic, &queue.name, &dead);
        self.slots.client.route_one(&dlq, letter).await?;
        self.message = None;
        self.settled();
        Ok(())
    }
}
