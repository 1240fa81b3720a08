//! One dead letter as read from `dlq.<subscription>`, and the filter that chooses letters.

use chrono::{DateTime, Utc};

use crate::codec::{parse_timestamp, Codec, JsonCodec};
use crate::message::Message;
use crate::subscriber::{
    HEADER_DLQ_AT, HEADER_DLQ_ATTEMPTS, HEADER_DLQ_REASON, HEADER_DLQ_SUBSCRIPTION,
    HEADER_DLQ_TOPIC, HEADER_DLQ_TRUNCATED,
};

/// The headers a dead letter carries that a replayed message must not.
pub const DEAD_LETTER_HEADERS: [&str; 6] = [
    HEADER_DLQ_REASON,
    HEADER_DLQ_TOPIC,
    HEADER_DLQ_SUBSCRIPTION,
    HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_AT,
    HEADER_DLQ_TRUNCATED,
];

/// One dead letter: the message as it sits in `dlq.<subscription>` and what its headers say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterRecord {
    /// The message id (the event id for events).
    pub id: String,
    /// The event type, when the body decodes as an event.
    pub event_type: Option<String>,
    /// Why it was dead-lettered (`x-dead-letter-reason`).
    pub reason: Option<String>,
    /// The topic it was first published to (`x-original-topic`): where a replay sends it.
    pub original_topic: Option<String>,
    /// The subscription that gave up on it (`x-dead-letter-subscription`).
    pub subscription: Option<String>,
    /// Delivery attempts made before it was dead-lettered (`x-attempts`).
    pub attempts: Option<u32>,
    /// When it was dead-lettered (`x-dead-lettered-at`).
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// The message itself, dead-letter headers included.
    pub message: Message,
}

impl DeadLetterRecord {
    /// Reads what `message`'s dead-letter headers and body say.
    pub fn from_message(message: Message) -> Self {
        let header = |name: &str| message.headers.get(name).cloned();
        DeadLetterRecord {
            id: message.id.clone(),
            event_type: JsonCodec.decode(&message).ok().map(|e| e.event_type),
            reason: header(HEADER_DLQ_REASON),
            original_topic: header(HEADER_DLQ_TOPIC).filter(|t| !t.is_empty()),
            subscription: header(HEADER_DLQ_SUBSCRIPTION),
            attempts: header(HEADER_DLQ_ATTEMPTS).and_then(|a| a.trim().parse().ok()),
            dead_lettered_at: header(HEADER_DLQ_AT).and_then(|t| parse_timestamp(&t).ok()),
            message,
        }
    }

    /// The message to publish again: the original without the dead-letter headers (same
    /// id, key, body and other headers).
    pub fn replay_message(&self) -> Message {
        let mut message = self.message.clone();
        for name in DEAD_LETTER_HEADERS {
            message.headers.remove(name);
        }
        message
    }
}

/// Which dead letters an operation applies to. Every condition set must hold; the default
/// (no condition) chooses every letter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only these message ids (any of them), when not empty.
    pub ids: Vec<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only letters whose reason contains this text (case-insensitive).
    pub reason: Option<String>,
    /// Only letters dead-lettered at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only letters dead-lettered before this time.
    pub until: Option<DateTime<Utc>>,
}

impl DeadLetterFilter {
    /// A filter choosing every letter.
    pub fn all() -> Self {
        DeadLetterFilter::default()
    }

    /// Adds one id to the ids chosen.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.ids.push(id.into());
        self
    }

    /// Chooses one event type.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = Some(event_type.into());
        self
    }

    /// Chooses letters whose reason contains `text` (case-insensitive).
    pub fn reason(mut self, text: impl Into<String>) -> Self {
        self.reason = Some(text.into());
        self
    }

    /// Chooses letters dead-lettered at or after `time`.
    pub fn since(mut self, time: DateTime<Utc>) -> Self {
        self.since = Some(time);
        self
    }

    /// Chooses letters dead-lettered before `time`.
    pub fn until(mut self, time: DateTime<Utc>) -> Self {
        self.until = Some(time);
        self
    }

    /// Whether `letter` is chosen. A time condition never chooses a letter without a
    /// dead-letter time.
    pub fn matches(&self, letter: &DeadLetterRecord) -> bool {
        if !self.ids.is_empty() && !self.ids.contains(&letter.id) {
            return false;
        }
        if let Some(t) = &self.event_type {
            if letter.event_type.as_deref() != Some(t.as_str()) {
                return false;
            }
        }
        if let Some(text) = &self.reason {
            let reason = letter.reason.as_deref().unwrap_or("").to_lowercase();
            if !reason.contains(&text.to_lowercase()) {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(at) = letter.dead_lettered_at else {
                return false;
            };
            if self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at >= u) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriber::{dead_letter_message, DeadLetter};

    fn letter(reason: &str) -> DeadLetterRecord {
        let event = crate::Event::new("order_placed", serde_json::json!({"n": 1}));
        let message = JsonCodec.encode(&event).expect("encode");
        let dead = DeadLetter::new(reason, 3);
        DeadLetterRecord::from_message(dead_letter_message(
            message,
            "orders.placed",
            "billing",
            &dead,
        ))
    }

    #[test]
    fn reads_the_headers_and_the_event_type() {
        let l = letter("provider timeout");
        assert_eq!(l.event_type.as_deref(), Some("order_placed"));
        assert_eq!(l.reason.as_deref(), Some("provider timeout"));
        assert_eq!(l.original_topic.as_deref(), Some("orders.placed"));
        assert_eq!(l.subscription.as_deref(), Some("billing"));
        assert_eq!(l.attempts, Some(3));
        assert!(l.dead_lettered_at.is_some());
        let replay = l.replay_message();
        assert!(DEAD_LETTER_HEADERS
            .iter()
            .all(|h| !replay.headers.contains_key(*h)));
        assert_eq!(replay.id, l.id);
        assert_eq!(replay.payload, l.message.payload);
    }

    #[test]
    fn every_condition_must_hold() {
        let l = letter("Provider TIMEOUT");
        assert!(DeadLetterFilter::all().matches(&l));
        assert!(DeadLetterFilter::all().reason("timeout").matches(&l));
        assert!(!DeadLetterFilter::all().reason("declined").matches(&l));
        assert!(DeadLetterFilter::all()
            .event_type("order_placed")
            .matches(&l));
        assert!(!DeadLetterFilter::all()
            .event_type("other")
            .reason("timeout")
            .matches(&l));
        assert!(DeadLetterFilter::all().id("x").id(l.id.clone()).matches(&l));
        assert!(!DeadLetterFilter::all().id("x").matches(&l));
        let at = l.dead_lettered_at.expect("time");
        assert!(DeadLetterFilter::all().since(at).matches(&l));
        assert!(!DeadLetterFilter::all().until(at).matches(&l));
        let mut undated = l.clone();
        undated.dead_lettered_at = None;
        assert!(!DeadLetterFilter::all().since(at).matches(&undated));
    }
}
