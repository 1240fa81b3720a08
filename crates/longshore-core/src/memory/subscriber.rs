//! Subscribing to the memory broker: the subscriber handle and the reader behind each
//! delivery stream.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream;
use tokio::sync::Notify;

use super::acker::{MemoryAcker, Slots};
use super::client::{capabilities, Client, Closed};
use super::queue::{lock, Entry, Queue, Side};
use super::BACKEND;
use crate::capabilities::Capabilities;
use crate::error::Error;
use crate::health::Health;
use crate::subscriber::{dead_letter_topic, Delivery, DeliveryStream, Subscriber, Subscription};
use crate::topic::validate_name;

/// Subscribing handle of a [`MemoryBroker`].
pub struct MemorySubscriber {
    client: Arc<Client>,
    closed: Arc<Closed>,
}

impl MemorySubscriber {
    pub(super) fn new(client: Arc<Client>) -> Self {
        MemorySubscriber {
            client,
            closed: Arc::new(Closed {
                flag: AtomicBool::new(false),
                notify: Notify::new(),
            }),
        }
    }

    fn declare(&self, subscription: &Subscription) -> Result<Arc<Queue>, Error> {
        subscription.validate()?;
        if !subscription.is_dead_letter_queue() {
            // Dead letters are kept from the moment the subscription exists, like a DLQ queue
            // bound to the dead-letter exchange.
            let dlq = dead_letter_topic(&subscription.name);
            self.client.ensure_queue(&dlq, std::slice::from_ref(&dlq));
        }
        Ok(self
            .client
            .ensure_queue(&subscription.name, &subscription.patterns))
    }
}

#[async_trait]
impl Subscriber for MemorySubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        if self.closed.flag.load(Ordering::Acquire) || self.client.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("memory subscriber"));
        }
        let queue = self.declare(subscription)?;
        let reader = Reader::new(
            queue,
            self.client.clone(),
            usize::from(subscription.prefetch.max(1)),
            self.closed.clone(),
        );
        Ok(Box::pin(stream::unfold(reader, |c| async move {
            let d = c.next().await?;
            Some((Ok(d), c))
        })))
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        self.declare(subscription).map(|_| ())
    }

    async fn close(&self) -> Result<(), Error> {
        self.closed.flag.store(true, Ordering::Release);
        self.closed.notify.notify_waiters();
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        capabilities(&self.client.config)
    }

    async fn health(&self) -> Health {
        if self.closed.flag.load(Ordering::Acquire) || self.client.closed.load(Ordering::Acquire) {
            Health::down(BACKEND, "memory subscriber is closed")
        } else {
            Health::up(BACKEND)
        }
    }

    /// Messages ready or delivered and not yet acknowledged.
    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        validate_name("subscription", subscription)?;
        let queues = lock(&self.client.queues);
        let Some(queue) = queues.get(subscription) else {
            return Err(Error::InvalidName {
                kind: "subscription",
                value: subscription.to_string(),
                reason: "no such subscription",
            });
        };
        let depth = lock(&queue.state).depth();
        Ok(Some(depth as u64))
    }
}

/// Reads one delivery stream of a subscription, holding at most `prefetch` unsettled.
struct Reader {
    slots: Arc<Slots>,
    closed: Arc<Closed>,
}

impl Reader {
    pub(super) fn new(
        queue: Arc<Queue>,
        client: Arc<Client>,
        prefetch: usize,
        closed: Arc<Closed>,
    ) -> Self {
        Reader {
            slots: Arc::new(Slots {
                queue,
                client,
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
        // No copy of the message: a nack or an unsettled drop hands it back to the acker
        // (`Acker::hold`) to requeue.
        let delivered_topic = String::from(&*topic);
        let acker = MemoryAcker {
            pending: Some((topic, attempt)),
            message: None,
            slots: self.slots.clone(),
        };
        Delivery::new(message, delivered_topic, attempt, Box::new(acker))
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
