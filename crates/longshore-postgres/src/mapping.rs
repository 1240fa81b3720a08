//! Topics and patterns in SQL, and messages to and from rows: the queue's `queue_messages`
//! and the store's `outbox` share the message columns (`message_id`, `message_key`,
//! `headers` as JSON text, `payload`).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use longshore_core::{Headers, Message};
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;

use crate::error::PgError;

/// The anchored regular expression (PostgreSQL ARE) matching `'.' || topic` for an AMQP-style
/// pattern: `*` is one word, `#` zero or more. Words are `[A-Za-z0-9_-]` (validated), so they
/// contain no regex metacharacters.
pub fn pattern_regex(pattern: &str) -> String {
    let mut r = String::from("^");
    for word in pattern.split('.') {
        match word {
            "#" => r.push_str(r"(?:\.[^.]+)*"),
            "*" => r.push_str(r"\.[^.]+"),
            w => {
                r.push_str(r"\.");
                r.push_str(w);
            }
        }
    }
    r.push('$');
    r
}

/// Headers as the JSON text the `headers` columns are written from.
pub(crate) fn headers_json(headers: &BTreeMap<String, String>) -> Result<String, PgError> {
    serde_json::to_string(headers).map_err(PgError::EncodeHeaders)
}

/// Messages of one publish as column arrays (bound as Postgres arrays, unnested in SQL).
pub(crate) struct MessageColumns {
    pub(crate) ids: Vec<String>,
    pub(crate) keys: Vec<Option<String>>,
    pub(crate) headers: Vec<String>,
    pub(crate) payloads: Vec<Vec<u8>>,
    /// When each row becomes visible: its schedule ([`Message::deliver_at`]), else now.
    pub(crate) visible: Vec<Option<DateTime<Utc>>>,
}

impl MessageColumns {
    pub(crate) fn build(messages: &[&Message]) -> Result<Self, PgError> {
        let n = messages.len();
        let mut c = MessageColumns {
            ids: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            visible: Vec::with_capacity(n),
        };
        for m in messages {
            c.ids.push(m.id.clone());
            c.keys.push(m.key.clone());
            c.headers.push(headers_json(&m.headers)?);
            c.payloads.push(m.payload.to_vec());
            // Publishers checked the header (`check_limits`); an unreadable one is "now".
            c.visible.push(m.scheduled_for().ok().flatten());
        }
        Ok(c)
    }
}

/// A stored row that is not a [`Message`] as longshore writes them (another writer of the
/// table put it there): what could be read of it, and what was wrong.
#[derive(Debug)]
pub(crate) struct Undecodable {
    /// The id, key, payload and every header that could be read (boxed: rare, and large).
    pub(crate) kept: Box<Message>,
    /// What was wrong, e.g. `headers.x is null`.
    pub(crate) reason: String,
}

/// Longest header name quoted in a reason.
const NAME_IN_REASON: usize = 64;

/// What a JSON value is, for a reason.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Headers from the JSON text of a `headers` column.
///
/// Strings are kept as they are; numbers and booleans, which have one obvious string form,
/// become their JSON text exactly as stored (`7`, `1.5`, `12345678901234567890`, `true`), as
/// the RabbitMQ adapter does with AMQP numbers and booleans. Anything else (headers that are
/// not an object, a header that is null, an array or an object, JSON serde cannot read) is an
/// error naming the first such thing, with the headers that could be read.
pub(crate) fn headers_from_json(text: &str) -> Result<Headers, (Headers, String)> {
    let object: BTreeMap<String, Box<RawValue>> = match serde_json::from_str(text) {
        Ok(object) => object,
        Err(e) => {
            let reason = match serde_json::from_str::<Value>(text) {
                Ok(value) if !value.is_object() => format!("headers are {}", json_kind(&value)),
                _ => format!("headers are not readable JSON: {e}"),
            };
            return Err((Headers::new(), reason));
        }
    };
    let mut headers = Headers::new();
    let mut first_bad = None;
    for (name, value) in object {
        match header_text(value.get().trim()) {
            Ok(text) => {
                headers.insert(name, text);
            }
            Err(kind) => {
                if first_bad.is_none() {
                    let name: String = name.chars().take(NAME_IN_REASON).collect();
                    first_bad = Some(format!("headers.{name} is {kind}"));
                }
            }
        }
    }
    match first_bad {
        None => Ok(headers),
        Some(reason) => Err((headers, reason)),
    }
}

/// One header value's text from its JSON text, or what kind of value it is instead.
fn header_text(raw: &str) -> Result<String, &'static str> {
    match raw.as_bytes().first() {
        Some(b'"') => serde_json::from_str(raw).map_err(|_| "an unreadable string"),
        Some(b't' | b'f' | b'-' | b'0'..=b'9') => Ok(raw.to_string()),
        Some(b'n') => Err("null"),
        Some(b'[') => Err("an array"),
        Some(b'{') => Err("an object"),
        _ => Err("unreadable"),
    }
}

/// One column of a stored message, noting the first column that could not be read.
fn column<T>(row: &PgRow, name: &str, reason: &mut Option<String>) -> Option<T>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    match row.try_get(name) {
        Ok(v) => Some(v),
        Err(e) => {
            reason.get_or_insert_with(|| format!("{name}: {e}"));
            None
        }
    }
}

/// The message of a `queue_messages` or `outbox` row (its headers selected as text), or what
/// could be read of it and why it is not a message.
pub(crate) fn decode_message(row: &PgRow) -> Result<Message, Undecodable> {
    let mut reason = None;
    let id: Option<String> = column(row, "message_id", &mut reason);
    let key: Option<Option<String>> = column(row, "message_key", &mut reason);
    let payload: Option<Vec<u8>> = column(row, "payload", &mut reason);
    let headers: Option<String> = column(row, "headers", &mut reason);
    let decoded = stored_message(
        id.unwrap_or_default(),
        key.flatten(),
        headers.as_deref().unwrap_or("{}"),
        payload.unwrap_or_default(),
    );
    match reason {
        None => decoded,
        // A column that could not be read is named first.
        Some(reason) => Err(Undecodable {
            kept: decoded.map_or_else(|u| u.kept, Box::new),
            reason,
        }),
    }
}

/// The message of a stored row's columns (`headers` as JSON text): see [`headers_from_json`].
pub(crate) fn stored_message(
    id: String,
    key: Option<String>,
    headers: &str,
    payload: Vec<u8>,
) -> Result<Message, Undecodable> {
    let (headers, reason) = match headers_from_json(headers) {
        Ok(h) => (h, None),
        Err((kept, why)) => (kept, Some(why)),
    };
    let message = Message {
        id,
        key,
        headers,
        payload: Bytes::from(payload),
    };
    match reason {
        None => Ok(message),
        Some(reason) => Err(Undecodable {
            kept: Box::new(message),
            reason,
        }),
    }
}

/// One leased `queue_messages` row: its id, attempt count and topic, and the message (or
/// what could be read of it, to be dead-lettered).
pub(crate) struct QueueRow {
    pub(crate) id: i64,
    pub(crate) attempts: i32,
    pub(crate) topic: String,
    pub(crate) message: Result<Message, Undecodable>,
}

impl QueueRow {
    /// Fails only when the row cannot even be settled (its id or attempt count unreadable).
    pub(crate) fn decode(row: &PgRow) -> Result<Self, PgError> {
        let id = row.try_get("id")?;
        let attempts = row.try_get("attempts")?;
        let mut message = decode_message(row);
        let topic = match row.try_get("topic") {
            Ok(topic) => topic,
            Err(e) => {
                let why = format!("topic: {e}");
                message = Err(match message {
                    Ok(kept) => Undecodable {
                        kept: Box::new(kept),
                        reason: why,
                    },
                    Err(u) => u,
                });
                String::new()
            }
        };
        Ok(QueueRow {
            id,
            attempts,
            topic,
            message,
        })
    }

    /// The attempt number a delivery reports: at least 1, whatever another writer stored.
    pub(crate) fn attempt(&self) -> u32 {
        u32::try_from(self.attempts).unwrap_or(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::pattern_regex;

    #[test]
    fn regexes() {
        assert_eq!(pattern_regex("a.*.#"), r"^\.a\.[^.]+(?:\.[^.]+)*$");
        assert_eq!(pattern_regex("#"), r"^(?:\.[^.]+)*$");
    }
}
