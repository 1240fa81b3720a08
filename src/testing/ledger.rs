//! The bus's shared state: the recorded traffic, and the work still in flight, with a watch
//! that ticks on every change so waiting is event-driven.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use longshore_core::{Message, Subscription};
use tokio::sync::watch;

use super::record::{event_type_of, Delivered, Outcome, Published, Traffic};

/// One (message id, subscription) pair the bus expects to be settled.
#[derive(Default)]
struct Expect {
    /// Publishes of this id not yet settled for this subscription.
    remaining: usize,
    /// The `published` index of the last publish, for the report.
    published: usize,
    /// Deliveries of it so far (indexes into `delivered`).
    deliveries: Vec<usize>,
}

#[derive(Default)]
struct State {
    published: Vec<Published>,
    delivered: Vec<Delivered>,
    /// Whether each delivery was unexpected (a redelivery after settling, a dead letter
    /// read back, a message published outside the bus): pending only while held.
    extra: Vec<bool>,
    /// Subscriptions a consumer was opened on through the bus, by the service's name. Those
    /// only declared (`ensure_subscription`) stand for other services and are not waited for.
    consumed: BTreeMap<String, Subscription>,
    /// Open consumer streams per subscription.
    consumers: BTreeMap<String, usize>,
    expected: BTreeMap<(String, String), Expect>,
    /// Publish calls waiting for the backend's confirm.
    publishing: usize,
}

/// Shared by the bus's publisher, subscriber and ackers.
pub(crate) struct Ledger {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
        }
    }
}

impl Ledger {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while recording leaves the records usable; keep reading them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every change from now on.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A publish of `message` to the service's `topic` starts: every subscription consumed
    /// through the bus so far whose patterns match now expects it. Returns its index.
    pub(crate) fn publishing(&self, topic: &str, message: &Message) -> usize {
        let mut s = self.state();
        let index = s.published.len();
        let subs: Vec<String> = s
            .consumed
            .values()
            .filter(|sub| sub.matches(topic))
            .map(|sub| sub.name.clone())
            .collect();
        for sub in subs {
            let e = s.expected.entry((message.id.clone(), sub)).or_default();
            e.remaining += 1;
            e.published = index;
        }
        s.published.push(Published {
            topic: topic.to_string(),
            event_type: event_type_of(message),
            message: message.clone(),
            confirmed: false,
        });
        s.publishing += 1;
        drop(s);
        self.touch();
        index
    }

    /// The publish at `index` returned: confirmed, or failed (then nothing waits for it).
    pub(crate) fn published(&self, index: usize, confirmed: bool) {
        let mut s = self.state();
        s.publishing = s.publishing.saturating_sub(1);
        if let Some(p) = s.published.get_mut(index) {
            p.confirmed = confirmed;
        }
        if !confirmed {
            if let Some(p) = s.published.get(index) {
                let id = p.message.id.clone();
                settle_id(&mut s, &id);
            }
        }
        drop(s);
        self.touch();
    }

    /// A scheduled message `id` was cancelled: nothing waits for it any more.
    pub(crate) fn cancelled(&self, id: &str) {
        let mut s = self.state();
        settle_id(&mut s, id);
        drop(s);
        self.touch();
    }

    /// A consumer was opened on `sub`: from now on, messages it matches wait for it.
    pub(crate) fn subscribed(&self, sub: &Subscription) {
        let mut s = self.state();
        s.consumed.insert(sub.name.clone(), sub.clone());
        *s.consumers.entry(sub.name.clone()).or_default() += 1;
        drop(s);
        self.touch();
    }

    /// A consumer stream of `name` ended or was dropped.
    pub(crate) fn consumer_closed(&self, name: &str) {
        if let Some(n) = self.state().consumers.get_mut(name) {
            *n = n.saturating_sub(1);
        }
        self.touch();
    }

    /// A delivery arrived; returns its index.
    pub(crate) fn delivered(
        &self,
        subscription: &str,
        topic: String,
        attempt: u32,
        message: &Message,
    ) -> usize {
        let mut s = self.state();
        let index = s.delivered.len();
        let key = (message.id.clone(), subscription.to_string());
        let expected = match s.expected.get_mut(&key) {
            Some(e) => {
                e.deliveries.push(index);
                true
            }
            None => false,
        };
        s.extra.push(!expected);
        s.delivered.push(Delivered {
            subscription: subscription.to_string(),
            topic,
            attempt,
            event_type: event_type_of(message),
            message: message.clone(),
            outcome: Outcome::InHandler,
        });
        drop(s);
        self.touch();
        index
    }

    /// The delivery at `index` was settled with `outcome` (or dropped, with `Dropped`).
    pub(crate) fn settled(&self, index: usize, outcome: Outcome) {
        let mut s = self.state();
        let Some(d) = s.delivered.get_mut(index) else {
            return;
        };
        d.outcome = outcome.clone();
        let key = (d.message.id.clone(), d.subscription.clone());
        let done = matches!(outcome, Outcome::Acked | Outcome::DeadLettered { .. });
        let expected = !s.extra.get(index).copied().unwrap_or(true);
        if done && expected {
            settle_one(&mut s, key);
        }
        drop(s);
        self.touch();
    }

    /// Everything recorded so far.
    pub(crate) fn traffic(&self) -> Traffic {
        let s = self.state();
        Traffic {
            published: s.published.clone(),
            delivered: s.delivered.clone(),
        }
    }

    /// What is still in flight, one readable line each; empty when the bus is idle.
    pub(crate) fn pending(&self) -> Vec<String> {
        let s = self.state();
        let mut out = Vec::new();
        if s.publishing > 0 {
            out.push(format!(
                "{} publish call(s) waiting for the backend's confirm",
                s.publishing
            ));
        }
        for ((id, sub), e) in &s.expected {
            let what = s
                .published
                .get(e.published)
                .map(|p| {
                    let ty = p.event_type.as_deref().unwrap_or("(not an event)");
                    format!("{} {ty}", p.topic)
                })
                .unwrap_or_default();
            let consumers = s.consumers.get(sub).copied().unwrap_or(0);
            let state = match e.deliveries.last().and_then(|i| s.delivered.get(*i)) {
                None if consumers == 0 => "not delivered: no consumer open".to_string(),
                None => "not delivered yet".to_string(),
                Some(d) => format!(
                    "delivered {} time(s), last attempt {}: {}",
                    e.deliveries.len(),
                    d.attempt,
                    d.outcome
                ),
            };
            out.push(format!("{sub} <- {what} id={id}: {state}"));
        }
        for (d, extra) in s.delivered.iter().zip(&s.extra) {
            if *extra && d.outcome == Outcome::InHandler {
                out.push(format!(
                    "{} <- {} id={} attempt {}: in handler (a redelivery or a message from outside the bus)",
                    d.subscription, d.topic, d.message.id, d.attempt
                ));
            }
        }
        out
    }
}

/// One publish of message `id` is off every subscription's list (it failed, or was cancelled).
fn settle_id(s: &mut State, id: &str) {
    let keys: Vec<_> = s
        .expected
        .keys()
        .filter(|(i, _)| i == id)
        .cloned()
        .collect();
    for key in keys {
        settle_one(s, key);
    }
}

fn settle_one(s: &mut State, key: (String, String)) {
    if let Some(e) = s.expected.get_mut(&key) {
        e.remaining = e.remaining.saturating_sub(1);
        if e.remaining == 0 {
            s.expected.remove(&key);
        }
    }
}
