//! Codecs turn [`Event`]s into [`Message`]s and back.
//!
//! The default [`JsonCodec`] writes exactly the seed's `DomainEvent.to_dict()` body
//! (`{"event_id","event_type","data","timestamp"}`) with metadata in headers, so Python
//! services built from the seed interoperate both ways. A CloudEvents codec can slot in
//! beside it through the [`Codec`] trait.

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{Event, Metadata};
use crate::message::{Headers, Message};

/// Header carrying [`Metadata::aggregate_id`].
pub const HEADER_AGGREGATE_ID: &str = "aggregate-id";
/// Header carrying [`Metadata::correlation_id`].
pub const HEADER_CORRELATION_ID: &str = "correlation-id";
/// Header carrying [`Metadata::causation_id`].
pub const HEADER_CAUSATION_ID: &str = "causation-id";
/// Header carrying the W3C `traceparent`.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header naming the body's content type.
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// The content type of the JSON codec.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Why a message could not be turned into an event (or the reverse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The body is empty.
    #[error("empty message body")]
    Empty,
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8 at byte {valid_up_to}")]
    Utf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// The body is not JSON, or not the envelope's shape (missing field, wrong type).
    #[error("malformed envelope: {0}")]
    Malformed(String),
    /// `event_id` is not a UUID.
    #[error("event_id {0:?} is not a UUID")]
    BadId(String),
    /// `timestamp` is neither RFC 3339 nor a naive ISO 8601 date-time.
    #[error("timestamp {0:?} is neither RFC 3339 nor naive ISO 8601")]
    BadTimestamp(String),
    /// The event's data does not fit the typed event.
    #[error("data of {event_type:?} does not fit: {message}")]
    Data {
        /// The event type.
        event_type: String,
        /// What serde said.
        message: String,
    },
    /// Encoding failed.
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Turns events into messages and back. Object safe so a service can choose one at run time.
pub trait Codec: Send + Sync + std::fmt::Debug {
    /// Encodes an event; the message id is the event id and the key the aggregate id.
    fn encode(&self, event: &Event) -> Result<Message, CodecError>;
    /// Decodes a message. Never panics, whatever the bytes.
    fn decode(&self, message: &Message) -> Result<Event, CodecError>;
}

/// The seed-compatible JSON codec (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

#[derive(Serialize)]
struct WireOut<'a> {
    event_id: String,
    event_type: &'a str,
    data: &'a serde_json::Value,
    timestamp: String,
}

#[derive(Deserialize)]
struct WireIn {
    event_id: String,
    event_type: String,
    data: serde_json::Value,
    timestamp: String,
}

impl Codec for JsonCodec {
    fn encode(&self, event: &Event) -> Result<Message, CodecError> {
        let body = WireOut {
            event_id: event.id.to_string(),
            event_type: &event.event_type,
            data: &event.data,
            timestamp: format_timestamp(&event.timestamp),
        };
        let payload = serde_json::to_vec(&body).map_err(|e| CodecError::Encode(e.to_string()))?;
        let mut headers: Headers = event.metadata.headers.clone();
        headers.insert(HEADER_CONTENT_TYPE.into(), CONTENT_TYPE_JSON.into());
        let m = &event.metadata;
        for (name, value) in [
            (HEADER_AGGREGATE_ID, &m.aggregate_id),
            (HEADER_CORRELATION_ID, &m.correlation_id),
            (HEADER_CAUSATION_ID, &m.causation_id),
            (HEADER_TRACEPARENT, &m.traceparent),
        ] {
            if let Some(value) = value {
                headers.insert(name.into(), value.clone());
            }
        }
        Ok(Message {
            id: event.id.to_string(),
            key: m.aggregate_id.clone(),
            headers,
            payload: Bytes::from(payload),
        })
    }

    fn decode(&self, message: &Message) -> Result<Event, CodecError> {
        let body = &message.payload;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(CodecError::Empty);
        }
        let text = std::str::from_utf8(body).map_err(|e| CodecError::Utf8 {
            valid_up_to: e.valid_up_to(),
        })?;
        let wire: WireIn =
            serde_json::from_str(text).map_err(|e| CodecError::Malformed(e.to_string()))?;
        let id = Uuid::parse_str(&wire.event_id).map_err(|_| CodecError::BadId(wire.event_id))?;
        let timestamp = parse_timestamp(&wire.timestamp)?;
        let mut headers = message.headers.clone();
        headers.remove(HEADER_CONTENT_TYPE);
        let mut take = |name: &str| headers.remove(name);
        let metadata = Metadata {
            aggregate_id: take(HEADER_AGGREGATE_ID).or_else(|| message.key.clone()),
            correlation_id: take(HEADER_CORRELATION_ID),
            causation_id: take(HEADER_CAUSATION_ID),
            traceparent: take(HEADER_TRACEPARENT),
            headers,
        };
        Ok(Event {
            id,
            event_type: wire.event_type,
            timestamp,
            data: wire.data,
            metadata,
        })
    }
}

/// Formats like Python's `datetime.utcnow().isoformat()`: naive, microseconds only when
/// non-zero. Readers that expect RFC 3339 still get a timestamp they can read as UTC.
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    use std::fmt::Write;
    let naive = ts.naive_utc();
    let micros = naive.nanosecond() % 1_000_000_000 / 1_000;
    if !(0..=9999).contains(&naive.year()) || naive.nanosecond() >= 1_000_000_000 {
        // Outside what Python's isoformat writes, or a leap second: chrono's formatter.
        return if micros == 0 {
            naive.format("%Y-%m-%dT%H:%M:%S").to_string()
        } else {
            naive.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
        };
    }
    // Written field by field: this runs for every event encoded, and strftime-style
    // formatting re-parses its pattern each time.
    let mut s = String::with_capacity(26);
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        naive.year(),
        naive.month(),
        naive.day(),
        naive.hour(),
        naive.minute(),
        naive.second()
    );
    if micros != 0 {
        let _ = write!(s, ".{micros:06}");
    }
    s
}

/// Reads RFC 3339 (any offset, normalised to UTC) or a naive ISO 8601 date-time (taken as UTC,
/// as the seed's `datetime.utcnow()` means).
pub fn parse_timestamp(s: &str) -> Result<DateTime<Utc>, CodecError> {
    if let Ok(ts) = DateTime::parse_from_rfc3339(s) {
        return Ok(ts.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(naive.and_utc());
        }
    }
    Err(CodecError::BadTimestamp(s.chars().take(64).collect()))
}

/// RFC 3339 with microseconds and `Z`, for places that want an explicit offset.
pub fn rfc3339(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The hand-written formatter writes exactly what chrono's strftime does.
        #[test]
        fn timestamp_format_matches_strftime(secs in 0i64..253_402_300_799, micros in 0u32..1_000_000) {
            let ts = DateTime::from_timestamp(secs, micros * 1_000).expect("in range");
            let naive = ts.naive_utc();
            let expected = if micros == 0 {
                naive.format("%Y-%m-%dT%H:%M:%S").to_string()
            } else {
                naive.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
            };
            prop_assert_eq!(format_timestamp(&ts), expected);
        }
    }

    #[test]
    fn roundtrip_keeps_everything() {
        let event = Event::new(
            "order_created",
            serde_json::json!({"order_id": "o-1", "n": 3}),
        )
        .with_aggregate_id("o-1")
        .with_correlation_id("c-1")
        .with_causation_id("x-1")
        .with_header("tenant", "acme");
        let message = JsonCodec.encode(&event).unwrap();
        assert_eq!(message.id, event.id.to_string());
        assert_eq!(message.key.as_deref(), Some("o-1"));
        assert_eq!(
            message.headers.get("content-type").map(String::as_str),
            Some(CONTENT_TYPE_JSON)
        );
        let back = JsonCodec.decode(&message).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn timestamps() {
        let ts = parse_timestamp("2024-01-26T12:34:56.123456").unwrap();
        assert_eq!(rfc3339(&ts), "2024-01-26T12:34:56.123456Z");
        assert_eq!(format_timestamp(&ts), "2024-01-26T12:34:56.123456");
        let ts = parse_timestamp("2024-01-26T12:34:56").unwrap();
        assert_eq!(format_timestamp(&ts), "2024-01-26T12:34:56");
        let ts = parse_timestamp("2024-01-26T14:34:56+02:00").unwrap();
        assert_eq!(format_timestamp(&ts), "2024-01-26T12:34:56");
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2024-13-26T12:34:56").is_err());
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        let decode = |body: &[u8]| JsonCodec.decode(&Message::new(body.to_vec()));
        assert_eq!(decode(b""), Err(CodecError::Empty));
        assert!(matches!(decode(b"\xff\xfe"), Err(CodecError::Utf8 { .. })));
        assert!(matches!(
            decode(b"{not json"),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(decode(b"[]"), Err(CodecError::Malformed(_))));
        assert!(matches!(
            decode(
                br#"{"event_id":"x","event_type":"a","data":{},"timestamp":"2024-01-01T00:00:00"}"#
            ),
            Err(CodecError::BadId(_))
        ));
        assert!(matches!(
            decode(br#"{"event_type":"a","data":{},"timestamp":"2024-01-01T00:00:00"}"#),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode(br#"{"event_id":"6f1c1c9e-3c1c-4c55-9a32-0d3b8f0f6d7e","event_type":7,"data":{},"timestamp":"2024-01-01T00:00:00"}"#),
            Err(CodecError::Malformed(_))
        ));
        assert!(matches!(
            decode(br#"{"event_id":"6f1c1c9e-3c1c-4c55-9a32-0d3b8f0f6d7e","event_type":"a","data":{},"timestamp":"soon"}"#),
            Err(CodecError::BadTimestamp(_))
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = JsonCodec.decode(&Message::new(bytes));
        }

        #[test]
        fn decode_never_panics_on_near_valid_json(s in r#"\{"event_id":"[0-9a-f-]{0,40}","event_type":".{0,8}","data":.{0,8},"timestamp":".{0,32}"\}"#) {
            let _ = JsonCodec.decode(&Message::new(s.into_bytes()));
        }
    }
}
