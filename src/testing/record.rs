//! What a `TestBus` recorded: the messages published, the deliveries and how each was settled.

use std::fmt;

use longshore_core::{Codec, DomainEvent, Event, JsonCodec, Message};

/// One message published through the bus.
#[derive(Clone, Debug)]
pub struct Published {
    /// The topic, as the service named it (without the bus's namespace).
    pub topic: String,
    /// The event type, when the payload is a longshore JSON event.
    pub event_type: Option<String>,
    /// The message as handed to the publisher (id, key, headers, payload).
    pub message: Message,
    /// Whether the backend confirmed it (`false` while in flight or when it failed).
    pub confirmed: bool,
}

/// How a delivery was settled.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Still held by the consumer (its handler is running, or retrying in process).
    InHandler,
    /// Acknowledged: handled successfully.
    Acked,
    /// Given back for redelivery (counted as retried).
    Nacked,
    /// Moved to `dlq.<subscription>`.
    DeadLettered {
        /// The reason the consumer gave.
        reason: String,
    },
    /// Settling failed; the broker redelivers the message.
    SettleFailed {
        /// The error.
        error: String,
    },
    /// Dropped unsettled (the consumer stopped); the broker redelivers the message.
    Dropped,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::InHandler => f.write_str("in handler"),
            Outcome::Acked => f.write_str("acked"),
            Outcome::Nacked => f.write_str("nacked"),
            Outcome::DeadLettered { reason } => write!(f, "dead-lettered ({reason})"),
            Outcome::SettleFailed { error } => write!(f, "settle failed ({error})"),
            Outcome::Dropped => f.write_str("dropped unsettled"),
        }
    }
}

/// One delivery to a consumer opened through the bus, and its outcome.
#[derive(Clone, Debug)]
pub struct Delivered {
    /// The subscription, as the service named it.
    pub subscription: String,
    /// The topic, as the service named it.
    pub topic: String,
    /// The delivery attempt the broker reported (above 1 for a redelivery).
    pub attempt: u32,
    /// The event type, when the payload is a longshore JSON event.
    pub event_type: Option<String>,
    /// The message delivered.
    pub message: Message,
    /// How it was settled so far.
    pub outcome: Outcome,
}

impl Delivered {
    /// The dead-letter reason, if this delivery was dead-lettered.
    pub fn reason(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::DeadLettered { reason } => Some(reason),
            _ => None,
        }
    }

    /// The payload decoded as the typed event `T`, if it is one.
    pub fn decode<T: DomainEvent>(&self) -> Option<T> {
        typed(&self.message)
    }
}

/// The event type of a JSON event message, if it is one.
pub(crate) fn event_type_of(message: &Message) -> Option<String> {
    JsonCodec.decode(message).ok().map(|e| e.event_type)
}

/// `message` decoded as `T`, if it is a JSON event of `T`'s type.
pub(crate) fn typed<T: DomainEvent>(message: &Message) -> Option<T> {
    JsonCodec
        .decode(message)
        .ok()
        .filter(|e: &Event| e.event_type == T::EVENT_TYPE)
        .and_then(|e| e.to_typed::<T>().ok())
}

/// The records a query found, with the whole recorded traffic for failure messages.
///
/// Derefs to a slice (`len`, `iter`, `first`, `is_empty`).
#[derive(Clone, Debug)]
pub struct Records<R> {
    items: Vec<R>,
    traffic: Traffic,
}

impl<R> Records<R> {
    pub(crate) fn new(items: Vec<R>, traffic: Traffic) -> Self {
        Records { items, traffic }
    }

    /// How many records were found.
    pub fn count(&self) -> usize {
        self.items.len()
    }

    /// The records, owned.
    pub fn into_vec(self) -> Vec<R> {
        self.items
    }

    /// Everything the bus recorded when the query ran (for assertion messages).
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }
}

impl Records<Delivered> {
    /// The dead-lettered deliveries whose reason contains `needle`.
    pub fn with_reason(self, needle: &str) -> Records<Delivered> {
        let items = self
            .items
            .into_iter()
            .filter(|d| d.reason().is_some_and(|r| r.contains(needle)))
            .collect();
        Records::new(items, self.traffic)
    }

    /// The deliveries of events of type `T`, decoded.
    pub fn of<T: DomainEvent>(self) -> Records<T> {
        let items = self.items.iter().filter_map(Delivered::decode).collect();
        Records::new(items, self.traffic)
    }
}

impl<R> std::ops::Deref for Records<R> {
    type Target = [R];
    fn deref(&self) -> &[R] {
        &self.items
    }
}

impl<R> IntoIterator for Records<R> {
    type Item = R;
    type IntoIter = std::vec::IntoIter<R>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// A snapshot of everything a bus recorded; its `Display` is the readable listing that
/// assertion failures and [`IdleTimeout`](crate::testing::IdleTimeout) print.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    /// Every message published, in order.
    pub published: Vec<Published>,
    /// Every delivery, in order of arrival.
    pub delivered: Vec<Delivered>,
}

/// Lines listed per section before the rest is summarised.
const SHOWN: usize = 40;

impl fmt::Display for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "published ({}):", self.published.len())?;
        for p in self.published.iter().take(SHOWN) {
            let state = if p.confirmed { "" } else { " [unconfirmed]" };
            writeln!(
                f,
                "  {} {} id={}{state}",
                p.topic,
                p.event_type.as_deref().unwrap_or("(not an event)"),
                p.message.id
            )?;
        }
        more(f, self.published.len())?;
        writeln!(f, "delivered ({}):", self.delivered.len())?;
        for d in self.delivered.iter().take(SHOWN) {
            writeln!(
                f,
                "  {} <- {} {} id={} attempt {}: {}",
                d.subscription,
                d.topic,
                d.event_type.as_deref().unwrap_or("(not an event)"),
                d.message.id,
                d.attempt,
                d.outcome
            )?;
        }
        more(f, self.delivered.len())
    }
}

fn more(f: &mut fmt::Formatter<'_>, n: usize) -> fmt::Result {
    if n > SHOWN {
        writeln!(f, "  … and {} more", n - SHOWN)?;
    }
    Ok(())
}
