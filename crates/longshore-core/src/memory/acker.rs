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
    /// `Some` until settled; a drop while `Some` requeues the message.
    pub(super) entry: Option<Entry>,
    pub(super) slots: Arc<Slots>,
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
        self.slots.client.route_one(&dlq, letter).await?;
        if self.entry.take().is_some() {
            self.slots.release();
            self.slots.queue.settle();
        }
        Ok(())
    }
}
