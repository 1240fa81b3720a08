//! The headers and body a message has in each wire format, as JSON Schema.

use serde_json::{json, Map, Value};

use super::WireFormat;

/// The message's headers schema.
pub(super) fn schema(wire: WireFormat, event_type: &str) -> Value {
    let string = |description: &str| json!({"type": "string", "description": description});
    let mut properties = Map::new();
    let mut required: Vec<String> = Vec::new();
    match wire {
        WireFormat::Seed => {
            properties.insert(
                "content-type".into(),
                json!({"type": "string", "const": "application/json"}),
            );
            properties.insert(
                "aggregate-id".into(),
                string("the aggregate id (also the ordering key)"),
            );
            properties.insert(
                "correlation-id".into(),
                string("groups the events of one request"),
            );
            properties.insert(
                "causation-id".into(),
                string("the event or command that caused this one"),
            );
        }
        WireFormat::CloudEventsBinary(binding) => {
            let p = binding.prefix();
            for (attr, schema) in [
                ("specversion", json!({"type": "string", "const": "1.0"})),
                ("id", string("the event id")),
                ("source", string("the producing service (URI-reference)")),
                ("type", json!({"type": "string", "const": event_type})),
                ("time", json!({"type": "string", "format": "date-time"})),
                ("subject", string("the aggregate id")),
                ("correlationid", string("groups the events of one request")),
                (
                    "causationid",
                    string("the event or command that caused this one"),
                ),
            ] {
                properties.insert(format!("{p}{attr}"), schema);
                if matches!(attr, "specversion" | "id" | "source" | "type") {
                    required.push(format!("{p}{attr}"));
                }
            }
            properties.insert(
                "content-type".into(),
                string("the CloudEvents datacontenttype"),
            );
        }
        WireFormat::CloudEventsStructured => {
            properties.insert(
                "content-type".into(),
                json!({"type": "string", "const": longshore_core::cloudevents::CONTENT_TYPE_STRUCTURED}),
            );
            required.push("content-type".into());
        }
    }
    properties.insert("traceparent".into(), string("W3C trace context"));
    let mut schema = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

/// The body's schema around the event's data schema.
pub(super) fn payload(wire: WireFormat, event_type: &str, data: &Value) -> Value {
    match wire {
        WireFormat::Seed => json!({
            "type": "object",
            "description": "the seed's envelope",
            "required": ["event_id", "event_type", "data", "timestamp"],
            "properties": {
                "event_id": {"type": "string", "format": "uuid"},
                "event_type": {"type": "string", "const": event_type},
                "data": data,
                "timestamp": {"type": "string", "description": "ISO 8601, UTC (naive or with offset)"},
            },
        }),
        WireFormat::CloudEventsBinary(_) => data.clone(),
        WireFormat::CloudEventsStructured => json!({
            "type": "object",
            "description": "the CloudEvents JSON event format",
            "required": ["specversion", "id", "source", "type"],
            "properties": {
                "specversion": {"type": "string", "const": "1.0"},
                "id": {"type": "string"},
                "source": {"type": "string"},
                "type": {"type": "string", "const": event_type},
                "time": {"type": "string", "format": "date-time"},
                "subject": {"type": "string"},
                "datacontenttype": {"type": "string"},
                "data": data,
            },
        }),
    }
}
