//! The seed's wire form: `DomainEvent.to_dict()` as the JSON body
//! (`{"event_id","event_type","data","timestamp"}`), metadata in headers, and the timestamp
//! formats the seed's Python services write and read. [`crate::codec`] holds the codecs;
//! this module is what they share, so that neither codec depends on the other.

use std::borrow::Cow;

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Timelike, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::CodecError;
use crate::event::{Event, Metadata};
use crate::event_data::Data;
use crate::message::{Headers, Message};

/// Header carrying [`Metadata::aggregate_id`].
pub const HEADER_AGGREGATE_ID: &str = "aggregate-id";
/// Header carrying [`Metadata::correlation_id`].
pub const HEADER_CORRELATION_ID: &str = "correlation-id";
/// Header carrying [`Metadata::causation_id`].
pub const HEADER_CAUSATION_ID: &str = "causation-id";
/// Header carrying the W3C `traceparent`.
pub(crate) const HEADER_TRACEPARENT: &str = "traceparent";
/// Header naming the body's content type.
pub const HEADER_CONTENT_TYPE: &str = "content-type";
/// The content type of the JSON codec.
pub const CONTENT_TYPE_JSON: &str = "application/json";

#[derive(Serialize)]
struct WireOut<'a> {
    event_id: String,
    event_type: &'a str,
    data: &'a Data,
    timestamp: String,
}

/// The body as read: id and timestamp borrowed from the bytes where they hold no escapes
/// (they are parsed at once, so copying them would be waste), the data borrowed to be kept
/// as a slice of the payload.
#[derive(Deserialize)]
struct WireIn<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    event_type: String,
    // Kept as text: a typed handler reads its struct straight from it (see `Data`).
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
}

/// Encodes the seed's envelope (the [`JsonCodec`](crate::JsonCodec) wire form).
pub(crate) fn encode_seed(event: &Event) -> Result<Message, CodecError> {
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

/// Decodes the seed's envelope.
pub(crate) fn decode_seed(message: &Message) -> Result<Event, CodecError> {
    let body = &message.payload;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(CodecError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|e| CodecError::Utf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    // serde's derive also reads a struct from a JSON array of its fields in order; the
    // seed's wire form is an object, and a positional array is someone else's format.
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(b'[') => {
            return Err(CodecError::Malformed(
                "the envelope is a JSON array; expected an object".into(),
            ))
        }
        _ => {
            return Err(CodecError::Malformed(
                "the envelope is not a JSON object".into(),
            ))
        }
    }
    let wire: WireIn =
        serde_json::from_str(text).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let id = Uuid::parse_str(&wire.event_id)
        .map_err(|_| CodecError::BadId(wire.event_id.into_owned()))?;
    let timestamp = parse_timestamp(&wire.timestamp)?;
    let metadata = metadata_from(message);
    // serde_json borrowed the data from `text`, which is `body`: the same bytes, shared.
    let data = Data::from_payload(body.slice_ref(wire.data.get().as_bytes()));
    Ok(Event {
        id,
        event_type: wire.event_type,
        timestamp,
        data,
        metadata,
    })
}

/// Splits the headers into the metadata fields and the free headers, in one pass.
fn metadata_from(message: &Message) -> Metadata {
    let mut metadata = Metadata::default();
    for (name, value) in &message.headers {
        let field = match name.as_str() {
            HEADER_CONTENT_TYPE => continue,
            HEADER_AGGREGATE_ID => &mut metadata.aggregate_id,
            HEADER_CORRELATION_ID => &mut metadata.correlation_id,
            HEADER_CAUSATION_ID => &mut metadata.causation_id,
            HEADER_TRACEPARENT => &mut metadata.traceparent,
            _ => {
                metadata.headers.insert(name.clone(), value.clone());
                continue;
            }
        };
        *field = Some(value.clone());
    }
    if metadata.aggregate_id.is_none() {
        metadata.aggregate_id = message.key.clone();
    }
    metadata
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
    // Every decoded event has a timestamp, nearly always in one of two shapes; chrono's
    // general parsers cost some 3,000 instructions (a failed RFC 3339 try, then a strftime
    // pattern read anew each time). The fast path reads those shapes directly and leaves
    // everything else, with the same answers, to chrono.
    if let Some(ts) = parse_common_timestamp(s.as_bytes()) {
        return Ok(ts);
    }
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

/// `YYYY-MM-DDTHH:MM:SS`, then optionally `.` and 1 to 9 digits, then nothing (naive, taken
/// as UTC), `Z` or `±HH:MM`. `None` for anything else, including leap seconds: chrono decides
/// those.
fn parse_common_timestamp(b: &[u8]) -> Option<DateTime<Utc>> {
    // Fixed-width fields read digit by digit: every decoded event comes through here.
    fn digit(b: &[u8], i: usize) -> Option<u32> {
        let c = *b.get(i)?;
        c.is_ascii_digit().then(|| u32::from(c - b'0'))
    }
    fn two(b: &[u8], i: usize) -> Option<u32> {
        Some(digit(b, i)? * 10 + digit(b, i + 1)?)
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = two(b, 0)? * 100 + two(b, 2)?;
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, two(b, 5)?, two(b, 8)?)?;
    let (hour, minute, second) = (two(b, 11)?, two(b, 14)?, two(b, 17)?);
    if second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0;
    if let Some((b'.', tail)) = rest.split_first() {
        let digits = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = tail[..digits]
            .iter()
            .fold(0, |n, &c| n * 10 + u32::from(c - b'0'));
        // Scaled to nanoseconds: 10^(9 - digits), digits in 1..=9.
        const SCALE: [u32; 9] = [
            100_000_000,
            10_000_000,
            1_000_000,
            100_000,
            10_000,
            1_000,
            100,
            10,
            1,
        ];
        nanos *= SCALE[digits - 1];
        rest = &tail[digits..];
    }
    let offset_secs = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (two(rest, 1)?, two(rest, 4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let local = date.and_time(time);
    if offset_secs == 0 {
        // UTC already (the usual case): no arithmetic to do.
        return Some(local.and_utc());
    }
    let utc = local.checked_sub_signed(chrono::TimeDelta::try_seconds(offset_secs)?)?;
    Some(utc.and_utc())
}

/// RFC 3339 with microseconds and `Z`, for places that want an explicit offset.
pub fn rfc3339(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, JsonCodec};
    use proptest::prelude::*;

    /// chrono's answer for a timestamp, without the fast path.
    fn parse_with_chrono(s: &str) -> Option<DateTime<Utc>> {
        if let Ok(ts) = DateTime::parse_from_rfc3339(s) {
            return Some(ts.with_timezone(&Utc));
        }
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()
            .map(|n| n.and_utc())
    }

    proptest! {
        /// Wherever the fast timestamp path answers, chrono gives the same answer.
        #[test]
        fn fast_timestamps_agree_with_chrono(
            s in r"[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{0,10})?(Z|[+-][0-2][0-9]:[0-6][0-9]|z|)"
        ) {
            if let Some(fast) = parse_common_timestamp(s.as_bytes()) {
                prop_assert_eq!(Some(fast), parse_with_chrono(&s), "{}", s);
            }
        }

        /// A formatted timestamp takes the fast path back.
        #[test]
        fn formatted_timestamps_take_the_fast_path(secs in 0i64..253_402_300_799, micros in 0u32..1_000_000) {
            let ts = DateTime::from_timestamp(secs, micros * 1_000).expect("in range");
            prop_assert_eq!(parse_common_timestamp(format_timestamp(&ts).as_bytes()), Some(ts));
            prop_assert_eq!(parse_common_timestamp(rfc3339(&ts).as_bytes()), Some(ts));
        }
    }

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
        // serde reads a struct from an array of its fields: the seed's envelope is an object.
        let positional =
            br#"["6f1c1c9e-3c1c-4c55-9a32-0d3b8f0f6d7e","a",{},"2024-01-01T00:00:00"]"#;
        assert!(matches!(decode(positional), Err(CodecError::Malformed(m)) if m.contains("array")));
        assert!(matches!(decode(b" 42"), Err(CodecError::Malformed(_))));
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
