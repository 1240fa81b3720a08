//! The state every handle of one memory broker shares: subscriptions (queues), the route cache
//! and the closed flag; and the backend's capabilities.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::config::MemoryConfig;
use super::queue::{lock, Entry, Queue, Side};
use super::timers::Timers;
use super::BACKEND;
use crate::capabilities::Capabilities;
use crate::error::Error;
use crate::message::Message;

/// The state every handle of one memory broker shares: its subscriptions and routes.
pub(super) struct Client {
    pub(super) config: MemoryConfig,
    pub(super) queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// Which subscriptions each topic routes to, so a publish costs a hash lookup instead of
    /// matching every pattern. Cleared whenever a subscription or binding is added; bounded by
    /// clearing when it grows past `ROUTE_CACHE_LIMIT` topics.
    pub(super) routes: Mutex<HashMap<String, Route>>,
    /// Set by [`MemoryBroker`]'s `close`: every handle of the broker refuses work afterwards.
    pub(super) closed: AtomicBool,
    /// Scheduled messages waiting for their time.
    pub(super) timers: Timers,
}

/// Where one topic's messages go; the topic itself is kept once here and shared by every
/// queued message.
#[derive(Clone)]
pub(super) struct Route {
    topic: Arc<str>,
    queues: Arc<[Arc<Queue>]>,
}

/// Most topics whose routes are cached at once.
const ROUTE_CACHE_LIMIT: usize = 10_000;

/// Most messages queued per lock: a large batch still lets consumers in between runs.
const RUN: usize = 256;

impl Client {
    pub(super) fn ensure_queue(&self, name: &str, patterns: &[String]) -> Arc<Queue> {
        let mut queues = lock(&self.queues);
        let queue = queues
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Queue::new(name)))
            .clone();
        let mut bound = lock(&queue.patterns);
        for p in patterns {
            if !bound.contains(p) {
                bound.push(p.clone());
            }
        }
        drop(bound);
        // Still under the queues lock: routes computed from now on see this binding.
        lock(&self.routes).clear();
        drop(queues);
        queue
    }

    fn matching(&self, topic: &str) -> Route {
        if let Some(hit) = lock(&self.routes).get(topic) {
            return hit.clone();
        }
        // Match under the queues lock, so a subscription added meanwhile (which clears the
        // cache under the same lock) cannot be missed by what we insert.
        let queues = lock(&self.queues);
        let found = Route {
            topic: Arc::from(topic),
            queues: queues
                .values()
                .filter(|q| {
                    lock(&q.patterns)
                        .iter()
                        .any(|p| crate::topic::matches(p, topic))
                })
                .cloned()
                .collect(),
        };
        let mut routes = lock(&self.routes);
        if routes.len() >= ROUTE_CACHE_LIMIT {
            routes.clear();
        }
        routes.insert(topic.to_string(), found.clone());
        drop(routes);
        drop(queues);
        found
    }

    /// Routes one message to every matching subscription, waiting for room where one is full.
    pub(super) async fn route_one(&self, topic: &str, message: Message) -> Result<(), Error> {
        let mut slots = [Slot::Pending(message)];
        self.route(topic, &mut slots).await;
        match slots {
            [Slot::Failed(_, error)] => Err(error),
            _ => Ok(()),
        }
    }

    /// Routes every pending slot, in order, to every matching subscription. A slot that one
    /// subscription refuses (full past the publish timeout) fails and goes to no further
    /// subscription; the others become `Sent`.
    pub(super) async fn route(&self, topic: &str, slots: &mut [Slot]) {
        let route = self.matching(topic);
        let Some((last, others)) = route.queues.split_last() else {
            slots.iter_mut().for_each(Slot::sent);
            return;
        };
        for queue in others {
            self.fill(queue, &route.topic, slots, |m| Some(m.clone()))
                .await;
        }
        // The last subscription takes the messages themselves: one queue, no copies.
        self.fill(last, &route.topic, slots, |_| None).await;
    }

    /// Appends the pending slots to `queue` in order, as many per lock as there is room for,
    /// waking consumers once per run rather than once per message. `copy` gives the message
    /// to queue while the slot keeps its own, or `None` to move the slot's message in.
    async fn fill(
        &self,
        queue: &Queue,
        topic: &Arc<str>,
        slots: &mut [Slot],
        copy: impl Fn(&Message) -> Option<Message>,
    ) {
        let max = self.config.max_queue_depth;
        let mut next = 0;
        // How long the message at `blocked.0` may still wait: woken but beaten to the room by
        // another publisher, it keeps its first deadline.
        let mut blocked: Option<(usize, tokio::time::Instant)> = None;
        while next < slots.len() {
            let room = queue.notified(Side::Publisher);
            tokio::pin!(room);
            let (wake, parking) = {
                let mut s = lock(&queue.state);
                let mut pushed = 0;
                let mut full = false;
                while next < slots.len() && pushed < RUN {
                    if !slots[next].is_pending() {
                        next += 1;
                        continue;
                    }
                    if s.depth() >= max {
                        full = true;
                        break;
                    }
                    if let Some(message) = slots[next].take(&copy) {
                        s.ready.push_back(Entry {
                            message,
                            topic: topic.clone(),
                            attempt: 1,
                        });
                        pushed += 1;
                    }
                    next += 1;
                }
                let wake = pushed > 0 && Queue::consumers_to_wake(&mut s);
                let parking = if full {
                    room.as_mut().enable();
                    Some(queue.park(&mut s, Side::Publisher))
                } else {
                    None
                };
                (wake, parking)
            };
            if wake {
                queue.wake_consumers();
            }
            let Some(parking) = parking else {
                continue;
            };
            let deadline = match blocked {
                Some((index, deadline)) if index == next => deadline,
                _ => tokio::time::Instant::now() + self.config.publish_timeout,
            };
            blocked = Some((next, deadline));
            let waited = tokio::time::timeout_at(deadline, room.as_mut()).await;
            drop(parking);
            if waited.is_err() {
                slots[next].fail(Error::Backpressure {
                    queue: queue.name.clone(),
                    capacity: max,
                    waited: self.config.publish_timeout,
                });
                next += 1;
            }
        }
    }
}

/// One message of a publish on its way through the subscriptions.
pub(super) enum Slot {
    Pending(Message),
    /// Queued everywhere it routes to (the last queue took the message itself).
    Sent,
    Failed(Message, Error),
}

impl Slot {
    pub(super) fn is_pending(&self) -> bool {
        matches!(self, Slot::Pending(_))
    }

    pub(super) fn sent(&mut self) {
        if self.is_pending() {
            *self = Slot::Sent;
        }
    }

    /// The message to queue if this slot is still pending: a copy, or the message itself
    /// (leaving the slot `Sent`) when `copy` gives none.
    pub(super) fn take(&mut self, copy: impl Fn(&Message) -> Option<Message>) -> Option<Message> {
        let Slot::Pending(message) = self else {
            return None;
        };
        if let Some(copied) = copy(message) {
            return Some(copied);
        }
        match std::mem::replace(self, Slot::Sent) {
            Slot::Pending(message) => Some(message),
            _ => None,
        }
    }

    pub(super) fn fail(&mut self, error: Error) {
        if let Slot::Pending(message) = std::mem::replace(self, Slot::Sent) {
            *self = Slot::Failed(message, error);
        }
    }
}

/// Set when a subscriber closes; its consumers end their streams.
pub(super) struct Closed {
    pub(super) flag: AtomicBool,
    pub(super) notify: Notify,
}

pub(super) fn capabilities(config: &MemoryConfig) -> Capabilities {
    Capabilities {
        native_delay: true,
        native_schedule: true,
        cancel_schedule: true,
        delivery_count: true,
        ..Capabilities::new(BACKEND, config.max_payload)
    }
}
