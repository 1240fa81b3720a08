//! Structured content mode: the JSON event format as the body.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::attributes::{outgoing, seed_header, Attributes};
use super::{CONTENT_TYPE_STRUCTURED, PREFIXES};
use crate::error::CodecError;
use crate::event::{Event, Metadata};
use crate::message::Message;
use crate::seed::HEADER_CONTENT_TYPE;

/// Encodes `event` as one JSON object: its attributes, `datacontenttype` and `data`.
pub(super) fn encode(event: &Event, source: &str) -> Result<Message, CodecError> {
    let out = outgoing(event, source);
    let mut body = Map::new();
    for (name, value) in out.attributes {
        body.insert(name, Value::String(value));
    }
    if let Some(traceparent) = &event.metadata.traceparent {
        body.insert("traceparent".into(), Value::String(traceparent.clone()));
    }
    body.insert(
        "datacontenttype".into(),
        Value::String(out.content_type.to_string()),
    );
    // JSON data is embedded as JSON; other text data as a JSON string (the format's rule).
    body.insert("data".into(), Value::clone(&event.data));
    let payload = serde_json::to_vec(&body).map_err(|e| CodecError::Encode(e.to_string()))?;
    let mut headers = out.headers;
    headers.insert(HEADER_CONTENT_TYPE.into(), CONTENT_TYPE_STRUCTURED.into());
    Ok(Message {
        id: event.id.to_string(),
        key: event.metadata.aggregate_id.clone(),
        headers,
        payload: Bytes::from(payload),
    })
}

/// Decodes a JSON event format body; the transport headers add metadata and free headers.
pub(super) fn decode(message: &Message) -> Result<Event, CodecError> {
    let object: Map<String, Value> = match serde_json::from_slice(&message.payload) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(CodecError::Malformed(
                "a structured CloudEvent must be a JSON object".into(),
            ))
        }
        Err(e) => return Err(CodecError::Malformed(e.to_string())),
    };
    let mut attributes = Attributes::default();
    let mut data = Value::Null;
    for (name, value) in object {
        match (name.as_str(), value) {
            ("data", value) => data = value,
            ("data_base64", _) => {
                return Err(CodecError::BadAttribute {
                    name: "data_base64".into(),
                    reason: "binary data is not supported; longshore carries text and JSON data"
                        .into(),
                })
            }
            (_, Value::Null) => {}
            (_, Value::String(s)) => attributes.set(&name, s),
            (_, v @ (Value::Bool(_) | Value::Number(_))) => attributes.set(&name, v.to_string()),
            (_, Value::Array(_) | Value::Object(_)) => {
                return Err(CodecError::BadAttribute {
                    reason: "an attribute must be a string, number or boolean".into(),
                    name: name.chars().take(64).collect(),
                })
            }
        }
    }
    let mut metadata = Metadata::default();
    for (name, value) in &message.headers {
        // Attribute headers a structured message may repeat are the body's, not free headers.
        let repeated = PREFIXES.iter().any(|p| {
            name.len() > p.len()
                && name.is_char_boundary(p.len())
                && name[..p.len()].eq_ignore_ascii_case(p)
        });
        if !repeated {
            seed_header(&mut metadata, name, value);
        }
    }
    attributes.into_event(data, message, metadata)
}

/// Whether a body the seed's decoder refused looks like a structured CloudEvent: a JSON object
/// naming `specversion`. Only ever asked on that error path.
pub(super) fn looks_structured(body: &[u8]) -> bool {
    let needle = b"\"specversion\"";
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
        && body.windows(needle.len()).any(|w| w == needle)
}
