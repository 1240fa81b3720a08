//! The attributes both content modes share: reading them into an [`Event`] with the required
//! ones checked, and writing an event's attributes out.

use serde_json::Value;
use uuid::Uuid;

use super::{KEPT_PREFIX, SPEC_VERSION};
use crate::error::CodecError;
use crate::event::{now, Event, Metadata};
use crate::event_data::Data;
use crate::message::{Headers, Message};
use crate::seed::{
    parse_timestamp, CONTENT_TYPE_JSON, HEADER_AGGREGATE_ID, HEADER_CAUSATION_ID,
    HEADER_CONTENT_TYPE, HEADER_CORRELATION_ID, HEADER_TRACEPARENT,
};

/// Attributes a decoded event keeps in `ce-` headers because [`Event`] has no field for them;
/// the encoder reads them back instead of writing them as extensions.
const KEPT_ID: &str = "ce-id";
const KEPT_SOURCE: &str = "ce-source";
const KEPT_CONTENT_TYPE: &str = "ce-datacontenttype";
/// Names an encoder never takes from `ce-` headers: they come from the event itself.
const FROM_EVENT: [&str; 6] = [
    "specversion",
    "type",
    "time",
    "subject",
    "correlationid",
    "causationid",
];

/// A CloudEvent's context attributes as read from a message, in either mode.
#[derive(Debug, Default)]
pub(super) struct Attributes {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    ty: Option<String>,
    time: Option<String>,
    subject: Option<String>,
    pub(super) datacontenttype: Option<String>,
    traceparent: Option<String>,
    correlationid: Option<String>,
    causationid: Option<String>,
    /// `dataschema` and extensions, by lowercase name.
    other: Vec<(String, String)>,
}

impl Attributes {
    /// Records attribute `name` (any case).
    pub(super) fn set(&mut self, name: &str, value: String) {
        let name = name.to_ascii_lowercase();
        let slot = match name.as_str() {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.ty,
            "time" => &mut self.time,
            "subject" => &mut self.subject,
            "datacontenttype" => &mut self.datacontenttype,
            "traceparent" => &mut self.traceparent,
            "correlationid" => &mut self.correlationid,
            "causationid" => &mut self.causationid,
            _ => {
                self.other.push((name, value));
                return;
            }
        };
        *slot = Some(value);
    }

    /// The event, after checking the required attributes. `metadata` holds what the
    /// message's other headers said; attributes take precedence over it.
    pub(super) fn into_event(
        self,
        data: Value,
        message: &Message,
        mut metadata: Metadata,
    ) -> Result<Event, CodecError> {
        match self.specversion.as_deref() {
            None => return Err(CodecError::MissingAttribute("specversion")),
            Some(SPEC_VERSION) => {}
            Some(other) => return Err(CodecError::SpecVersion(clip(other))),
        }
        let id = required(self.id, "id")?;
        let source = required(self.source, "source")?;
        let event_type = required(self.ty, "type")?;
        let event_id = match Uuid::parse_str(&id) {
            Ok(uuid) => uuid,
            Err(_) => {
                let derived = derived_id(&source, &id);
                metadata.headers.insert(KEPT_ID.into(), id);
                derived
            }
        };
        let timestamp = match self.time {
            Some(time) => parse_timestamp(&time)?,
            // Optional in CloudEvents, required in longshore's envelope: the arrival time is
            // the best a consumer knows.
            None => now(),
        };
        metadata.headers.insert(KEPT_SOURCE.into(), source);
        if let Some(ct) = self.datacontenttype.filter(|ct| !is_json(ct)) {
            metadata.headers.insert(KEPT_CONTENT_TYPE.into(), ct);
        }
        for (name, value) in self.other {
            metadata
                .headers
                .insert(format!("{KEPT_PREFIX}{name}"), value);
        }
        metadata.aggregate_id = self
            .subject
            .or(metadata.aggregate_id)
            .or_else(|| message.key.clone());
        metadata.correlation_id = self.correlationid.or(metadata.correlation_id);
        metadata.causation_id = self.causationid.or(metadata.causation_id);
        metadata.traceparent = metadata.traceparent.or(self.traceparent);
        Ok(Event {
            id: event_id,
            event_type,
            timestamp,
            data: data.into(),
            metadata,
        })
    }
}

fn required(value: Option<String>, name: &'static str) -> Result<String, CodecError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(CodecError::MissingAttribute(name))
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A stable UUID (version 8) for a peer's non-UUID id: the same `(source, id)` always gives
/// the same UUID, so the inbox and broker deduplication still recognise a redelivery.
fn derived_id(source: &str, id: &str) -> Uuid {
    // FNV-1a, twice with different offsets: stable across Rust versions and platforms,
    // unlike std's hasher.
    fn fnv(seed: u64, parts: [&str; 2]) -> u64 {
        let mut h = seed;
        for part in parts {
            for b in part.bytes().chain([0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
    let hi = fnv(0xcbf2_9ce4_8422_2325, [source, id]);
    let lo = fnv(0x8422_2325_cbf2_9ce4, [source, id]);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Applies one non-CloudEvents header the way the seed's decoder does: the metadata headers to
/// their fields, everything else (but the content type) to the free headers.
pub(super) fn seed_header(metadata: &mut Metadata, name: &str, value: &str) {
    let field = match name {
        HEADER_CONTENT_TYPE => return,
        HEADER_AGGREGATE_ID => &mut metadata.aggregate_id,
        HEADER_CORRELATION_ID => &mut metadata.correlation_id,
        HEADER_CAUSATION_ID => &mut metadata.causation_id,
        HEADER_TRACEPARENT => &mut metadata.traceparent,
        _ => {
            metadata.headers.insert(name.to_string(), value.to_string());
            return;
        }
    };
    *field = Some(value.to_string());
}

/// Whether a media type is JSON (`application/json`, `text/json`, `…+json`, with parameters).
pub(super) fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case(CONTENT_TYPE_JSON)
        || essence.eq_ignore_ascii_case("text/json")
        || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case("+json"))
}

/// What an event says as CloudEvents: its attributes (by lowercase name, `specversion` first),
/// its data content type and the free headers that travel beside them.
pub(super) struct Outgoing<'a> {
    pub attributes: Vec<(String, String)>,
    pub content_type: &'a str,
    pub headers: Headers,
}

/// Lays out `event` for either mode, with `source` where the event carries none.
pub(super) fn outgoing<'a>(event: &'a Event, source: &'a str) -> Outgoing<'a> {
    let m = &event.metadata;
    let kept = |name: &str| m.headers.get(name).map(String::as_str);
    let mut attributes = vec![
        ("specversion".to_string(), SPEC_VERSION.to_string()),
        (
            "id".to_string(),
            kept(KEPT_ID).map_or_else(|| event.id.to_string(), str::to_string),
        ),
        (
            "source".to_string(),
            kept(KEPT_SOURCE).unwrap_or(source).to_string(),
        ),
        ("type".to_string(), event.event_type.clone()),
        ("time".to_string(), crate::seed::rfc3339(&event.timestamp)),
    ];
    for (name, value) in [
        ("subject", &m.aggregate_id),
        ("correlationid", &m.correlation_id),
        ("causationid", &m.causation_id),
    ] {
        if let Some(value) = value {
            attributes.push((name.to_string(), value.clone()));
        }
    }
    let mut headers = Headers::new();
    for (name, value) in &m.headers {
        match name.strip_prefix(KEPT_PREFIX) {
            Some(attr) if valid_attribute_name(attr) => {
                if !matches!(attr, "id" | "source" | "datacontenttype")
                    && !FROM_EVENT.contains(&attr)
                {
                    attributes.push((attr.to_string(), value.clone()));
                }
            }
            _ => {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    if let Some(traceparent) = &m.traceparent {
        // The plain W3C header, which every tracer (and longshore's observe layer) reads.
        headers.insert(HEADER_TRACEPARENT.to_string(), traceparent.clone());
    }
    Outgoing {
        attributes,
        content_type: kept(KEPT_CONTENT_TYPE).unwrap_or(CONTENT_TYPE_JSON),
        headers,
    }
}

/// CloudEvents attribute names: lowercase ASCII letters and digits.
fn valid_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The bytes of `data` for `content_type`: JSON text, or a string's own text for other types.
pub(super) fn data_bytes(data: &Data, content_type: &str) -> Result<Vec<u8>, CodecError> {
    if !is_json(content_type) {
        if let Value::String(text) = &**data {
            return Ok(text.clone().into_bytes());
        }
    }
    serde_json::to_vec(data).map_err(|e| CodecError::Encode(e.to_string()))
}
