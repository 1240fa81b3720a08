//! Binary content mode: attributes in headers under the binding's prefix, the data as body.

use bytes::Bytes;
use serde_json::Value;

use super::attributes::{data_bytes, is_json, outgoing, seed_header, Attributes};
use super::PREFIXES;
use crate::error::CodecError;
use crate::event::{Event, Metadata};
use crate::message::Message;
use crate::seed::HEADER_CONTENT_TYPE;

/// Encodes `event` with attribute headers named `prefix` + attribute.
pub(super) fn encode(event: &Event, prefix: &str, source: &str) -> Result<Message, CodecError> {
    let out = outgoing(event, source);
    let payload = data_bytes(&event.data, out.content_type)?;
    let mut headers = out.headers;
    for (name, value) in out.attributes {
        headers.insert(format!("{prefix}{name}"), value);
    }
    headers.insert(HEADER_CONTENT_TYPE.into(), out.content_type.to_string());
    Ok(Message {
        id: event.id.to_string(),
        key: event.metadata.aggregate_id.clone(),
        headers,
        payload: Bytes::from(payload),
    })
}

/// Decodes a message whose `<prefix>specversion` header was found.
pub(super) fn decode(message: &Message) -> Result<Event, CodecError> {
    let mut attributes = Attributes::default();
    let mut metadata = Metadata::default();
    for (name, value) in &message.headers {
        match attribute_name(name) {
            Some(attr) => attributes.set(attr, value.clone()),
            None if name.eq_ignore_ascii_case(HEADER_CONTENT_TYPE) => {
                // The binding's datacontenttype, unless a prefixed header said it already
                // (NATS peers may write `ce-datacontenttype`).
                if attributes.datacontenttype.is_none() {
                    attributes.datacontenttype = Some(value.clone());
                }
            }
            None => seed_header(&mut metadata, name, value),
        }
    }
    let data = data_of(&message.payload, attributes.datacontenttype.as_deref())?;
    attributes.into_event(data, message, metadata)
}

/// The attribute a header names, if it carries one of the known prefixes. Every prefix is
/// accepted whichever one announced the message: a peer mixing them is still understood.
fn attribute_name(name: &str) -> Option<&str> {
    PREFIXES.iter().find_map(|p| {
        let len = p.len();
        (name.len() > len && name.is_char_boundary(len) && name[..len].eq_ignore_ascii_case(p))
            .then(|| &name[len..])
    })
}

/// The data: JSON for a JSON content type (or none; an empty body is no data), text for others.
fn data_of(body: &[u8], content_type: Option<&str>) -> Result<Value, CodecError> {
    if content_type.map_or(true, is_json) {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(body).map_err(|e| CodecError::Malformed(e.to_string()));
    }
    match std::str::from_utf8(body) {
        Ok(text) => Ok(Value::String(text.to_string())),
        Err(e) => Err(CodecError::BadAttribute {
            name: "datacontenttype".into(),
            reason: format!(
                "{:?} data is not UTF-8 text (at byte {}); longshore carries text and JSON data",
                content_type.unwrap_or_default(),
                e.valid_up_to()
            ),
        }),
    }
}
