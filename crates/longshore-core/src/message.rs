//! The transport-level message every publisher and subscriber moves.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::error::Error;

/// String headers carried beside the payload.
///
/// Ordered so that encodings are deterministic (useful in tests and golden files).
pub type Headers = BTreeMap<String, String>;

/// Most headers a message may carry (every adapter can carry this many).
pub const MAX_HEADERS: usize = 64;
/// Longest header name or value, in bytes.
pub const MAX_HEADER_VALUE: usize = 4096;

/// A message as brokers see it: an id, an optional ordering key, headers and opaque bytes.
///
/// The event layer ([`crate::Event`] + [`crate::Codec`]) sits on top of this, as in Watermill.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Unique message id (for events: the event id). Brokers use it for deduplication where
    /// they can (JetStream `Nats-Msg-Id`, AMQP `message_id`).
    pub id: String,
    /// Ordering / partition key (for events: the aggregate id). Messages with the same key keep
    /// their order on backends that partition.
    pub key: Option<String>,
    /// Metadata headers.
    pub headers: Headers,
    /// The body.
    pub payload: Bytes,
}

impl Message {
    /// A message with a fresh UUID v7 id and no key or headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            id: uuid::Uuid::now_v7().to_string(),
            key: None,
            headers: Headers::new(),
            payload: payload.into(),
        }
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the ordering key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Checks the size limits shared by all adapters: `max_payload` bytes of payload and
    /// [`MAX_HEADERS`] headers of at most [`MAX_HEADER_VALUE`] bytes each.
    ///
    /// Publishers call this before sending anything, so an oversized message is a typed error
    /// and never a half-sent batch.
    pub fn check_limits(&self, max_payload: usize) -> Result<(), Error> {
        if self.payload.len() > max_payload {
            return Err(Error::PayloadTooLarge {
                size: self.payload.len(),
                limit: max_payload,
            });
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(Error::HeadersTooLarge(format!(
                "{} headers, at most {MAX_HEADERS} allowed",
                self.headers.len()
            )));
        }
        for (name, value) in &self.headers {
            if name.is_empty() || name.len() > MAX_HEADER_VALUE || value.len() > MAX_HEADER_VALUE {
                return Err(Error::HeadersTooLarge(format!(
                    "header {:?} is empty or longer than {MAX_HEADER_VALUE} bytes",
                    truncate(name, 64)
                )));
            }
        }
        // A schedule or expiry no consumer could read would be dead-lettered on arrival.
        self.scheduled_for()?;
        self.expiry()?;
        if self.id.is_empty() || self.id.len() > 256 {
            return Err(Error::InvalidName {
                kind: "message id",
                value: truncate(&self.id, 64).to_string(),
                reason: "must be 1 to 256 bytes",
            });
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced() {
        let m = Message::new(vec![0u8; 11]);
        assert!(m.check_limits(10).is_err());
        assert!(m.check_limits(11).is_ok());
        let mut m = Message::new("x");
        for i in 0..=MAX_HEADERS {
            m.headers.insert(format!("h{i}"), "v".into());
        }
        assert!(matches!(m.check_limits(10), Err(Error::HeadersTooLarge(_))));
        let m = Message::new("x").with_header("a", "v".repeat(MAX_HEADER_VALUE + 1));
        assert!(matches!(m.check_limits(10), Err(Error::HeadersTooLarge(_))));
        let m = Message::new("x").with_id("");
        assert!(matches!(m.check_limits(10), Err(Error::InvalidName { .. })));
    }
}
