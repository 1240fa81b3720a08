//! An AsyncAPI 3.0 document of what a service publishes and consumes, generated from code.
//!
//! Declare each event type with the topic it is published to
//! ([`AsyncApi::publishes`](crate::asyncapi::AsyncApi::publishes)) or the subscription that
//! consumes it ([`AsyncApi::consumes`](crate::asyncapi::AsyncApi::consumes)); payload schemas come from
//! `schemars` on the [`DomainEvent`] types, headers from the wire format the codec writes
//! (the seed's envelope or CloudEvents binary / structured, in the backend's binding names),
//! and the server entry from the connection URL with credentials removed.
//!
//! ```
//! use longshore::asyncapi::AsyncApi;
//! use longshore::{DomainEvent, Subscription};
//!
//! #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
//! struct OrderCreated { order_id: String, total_cents: u64 }
//! impl DomainEvent for OrderCreated { const EVENT_TYPE: &'static str = "order_created"; }
//!
//! let doc = AsyncApi::new("orders", "1.0.0")
//!     .server("amqp://guest:secret@broker:5672/%2f?codec=cloudevents")
//!     .publishes::<OrderCreated>(None)
//!     .consumes::<OrderCreated>(&Subscription::new("billing", ["events.#"]))
//!     .to_json();
//! assert_eq!(doc["asyncapi"], "3.0.0");
//! assert!(!doc.to_string().contains("secret"));
//! ```
//!
//! Wildcard patterns become channel parameters: `events.*` is the address `events.{word1}`,
//! `#` is `{rest}` (zero or more words).

mod headers;
mod validate;

use std::collections::BTreeMap;

use longshore_core::cloudevents::{codec_from_url, ContentMode, HeaderBinding};
use longshore_core::url::redact_url;
use longshore_core::{DomainEvent, Subscription};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

pub use validate::{validate, ValidatedHandlers};

/// The AsyncAPI version written.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// How messages are laid on the wire, which decides the headers the document lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// The seed's JSON envelope (the default codec).
    #[default]
    Seed,
    /// CloudEvents in binary mode, with the binding's header names.
    CloudEventsBinary(HeaderBinding),
    /// CloudEvents in structured mode.
    CloudEventsStructured,
}

/// One message (event type) of the document.
#[derive(Clone, Debug)]
struct MessageDef {
    payload: Value,
}

/// One channel: an address (a topic, or a pattern with parameters) and its messages.
#[derive(Clone, Debug, Default)]
struct ChannelDef {
    address: String,
    parameters: Vec<String>,
    messages: Vec<String>,
}

/// A builder for the document (see the module docs).
#[derive(Clone, Debug)]
pub struct AsyncApi {
    title: String,
    version: String,
    description: Option<String>,
    server: Option<(String, Value)>,
    wire: WireFormat,
    messages: BTreeMap<String, MessageDef>,
    channels: BTreeMap<String, ChannelDef>,
    /// (operation id, action, channel id, event type)
    operations: Vec<(String, &'static str, String, String)>,
}

impl AsyncApi {
    /// A document for the service `title` at API version `version`.
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        AsyncApi {
            title: title.into(),
            version: version.into(),
            description: None,
            server: None,
            wire: WireFormat::Seed,
            messages: BTreeMap::new(),
            channels: BTreeMap::new(),
            operations: Vec::new(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// The server entry from a connection URL (credentials removed; the protocol from the
    /// scheme), and the wire format from its `?codec=` (as `connect` reads it).
    pub fn server(mut self, url: &str) -> Self {
        let (clean, codec) = codec_from_url(url).unwrap_or_else(|_| (url.to_string(), None));
        let redacted = redact_url(&clean);
        let (scheme, rest) = redacted.split_once("://").unwrap_or(("unknown", ""));
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let (host, pathname) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].split('?').next().unwrap_or("")),
            None => (rest, ""),
        };
        let backend = backend_of(scheme);
        let mut server = json!({
            "host": if host.is_empty() { "localhost" } else { host },
            "protocol": scheme.to_ascii_lowercase(),
            "description": format!("longshore {backend} backend"),
        });
        if !pathname.is_empty() && pathname != "/" {
            server["pathname"] = Value::String(pathname.to_string());
        }
        self.wire = match codec {
            None => WireFormat::Seed,
            Some(c) if c.mode() == ContentMode::Structured => WireFormat::CloudEventsStructured,
            Some(_) => WireFormat::CloudEventsBinary(HeaderBinding::for_backend(backend)),
        };
        self.server = Some((backend.to_string(), server));
        self
    }

    /// Sets the wire format explicitly (else the seed's envelope, or what [`Self::server`]'s
    /// URL asked for).
    pub fn wire_format(mut self, wire: WireFormat) -> Self {
        self.wire = wire;
        self
    }

    /// The service publishes `T` to `topic` (default `events.<EVENT_TYPE>`).
    pub fn publishes<T: DomainEvent + JsonSchema>(self, topic: Option<&str>) -> Self {
        let topic = topic.map_or_else(|| format!("events.{}", T::EVENT_TYPE), str::to_string);
        self.publishes_schema(T::EVENT_TYPE, &topic, payload_schema::<T>())
    }

    /// The service consumes `T` through `subscription`: one receive operation per pattern.
    pub fn consumes<T: DomainEvent + JsonSchema>(self, subscription: &Subscription) -> Self {
        self.consumes_schema(T::EVENT_TYPE, subscription, payload_schema::<T>())
    }

    /// [`Self::publishes`] with a payload schema given as JSON (for types without `schemars`).
    pub fn publishes_schema(mut self, event_type: &str, topic: &str, payload: Value) -> Self {
        self.message(event_type, payload);
        let channel = self.channel(topic, event_type);
        let id = operation_id(&format!("send_{event_type}_{channel}"));
        self.operations
            .push((id, "send", channel, event_type.to_string()));
        self
    }

    /// [`Self::consumes`] with a payload schema given as JSON.
    pub fn consumes_schema(
        mut self,
        event_type: &str,
        subscription: &Subscription,
        payload: Value,
    ) -> Self {
        self.message(event_type, payload);
        for pattern in &subscription.patterns {
            let channel = self.channel(pattern, event_type);
            let id = operation_id(&format!(
                "receive_{}_{event_type}_{channel}",
                subscription.name
            ));
            self.operations
                .push((id, "receive", channel, event_type.to_string()));
        }
        self
    }

    fn message(&mut self, event_type: &str, payload: Value) {
        self.messages
            .insert(event_type.to_string(), MessageDef { payload });
    }

    /// The channel for a topic or pattern (made on first use), with `event_type` among its
    /// messages; returns its id.
    fn channel(&mut self, topic: &str, event_type: &str) -> String {
        let (address, parameters) = address_of(topic);
        // The address without its braces: `events.{rest}` is the channel `events.rest`.
        let id = component_id(&address.replace(['{', '}'], ""));
        let channel = self
            .channels
            .entry(id.clone())
            .or_insert_with(|| ChannelDef {
                address,
                parameters,
                messages: Vec::new(),
            });
        let key = component_id(event_type);
        if !channel.messages.contains(&key) {
            channel.messages.push(key);
        }
        id
    }

    /// The document as JSON (which is also YAML 1.2).
    pub fn to_json(&self) -> Value {
        let mut doc = Map::new();
        doc.insert("asyncapi".into(), json!(ASYNCAPI_VERSION));
        let mut info = json!({"title": self.title, "version": self.version});
        if let Some(d) = &self.description {
            info["description"] = json!(d);
        }
        doc.insert("info".into(), info);
        doc.insert("defaultContentType".into(), json!(self.content_type()));
        if let Some((name, server)) = &self.server {
            doc.insert("servers".into(), json!({ name: server }));
        }
        let mut channels = Map::new();
        for (id, c) in &self.channels {
            let mut messages = Map::new();
            for m in &c.messages {
                messages.insert(
                    m.clone(),
                    json!({"$ref": format!("#/components/messages/{m}")}),
                );
            }
            let mut channel = json!({"address": c.address, "messages": messages});
            if !c.parameters.is_empty() {
                let params: Map<String, Value> = c
                    .parameters
                    .iter()
                    .map(|p| (p.clone(), json!({"description": parameter_description(p)})))
                    .collect();
                channel["parameters"] = Value::Object(params);
            }
            channels.insert(id.clone(), channel);
        }
        doc.insert("channels".into(), Value::Object(channels));
        let mut operations = Map::new();
        for (id, action, channel, event_type) in &self.operations {
            let key = component_id(event_type);
            operations.insert(
                id.clone(),
                json!({
                    "action": action,
                    "channel": {"$ref": format!("#/channels/{channel}")},
                    "messages": [{"$ref": format!("#/channels/{channel}/messages/{key}")}],
                }),
            );
        }
        doc.insert("operations".into(), Value::Object(operations));
        let mut messages = Map::new();
        for (event_type, m) in &self.messages {
            messages.insert(
                component_id(event_type),
                json!({
                    "name": event_type,
                    "title": event_type,
                    "contentType": self.content_type(),
                    "headers": headers::schema(self.wire, event_type),
                    "payload": self.payload(event_type, &m.payload),
                }),
            );
        }
        doc.insert("components".into(), json!({ "messages": messages }));
        Value::Object(doc)
    }

    /// The document as pretty-printed JSON.
    pub fn to_json_string(&self) -> String {
        // A `Value` always serialises.
        serde_json::to_string_pretty(&self.to_json()).unwrap_or_default()
    }

    fn content_type(&self) -> &'static str {
        match self.wire {
            WireFormat::CloudEventsStructured => "application/cloudevents+json",
            _ => "application/json",
        }
    }

    /// The body's schema: the seed envelope or the CloudEvents JSON format around `data`, or
    /// `data` itself in binary mode.
    fn payload(&self, event_type: &str, data: &Value) -> Value {
        headers::payload(self.wire, event_type, data)
    }
}

/// The JSON Schema of `T`, inlined (the document is one file, so no `$ref`s into it) and
/// without `$schema` (AsyncAPI's default schema format is a JSON Schema draft-07 superset).
fn payload_schema<T: JsonSchema>() -> Value {
    let settings = schemars::generate::SchemaSettings::draft07().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut value = schema.to_value();
    if let Some(object) = value.as_object_mut() {
        object.remove("definitions");
    }
    value
}

fn backend_of(scheme: &str) -> &'static str {
    match scheme.to_ascii_lowercase().as_str() {
        "amqp" | "amqps" => "rabbitmq",
        "kafka" => "kafka",
        "nats" | "tls" => "nats",
        "postgres" | "postgresql" => "postgres",
        "sqlite" => "sqlite",
        _ => "memory",
    }
}

/// AsyncAPI component keys allow `[A-Za-z0-9_.-]`; anything else becomes `_`.
fn component_id(name: &str) -> String {
    let id: String = name
        .chars()
        .map(|c| match c {
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') => c,
            _ => '_',
        })
        .collect();
    if id.is_empty() {
        "_".into()
    } else {
        id
    }
}

fn operation_id(name: &str) -> String {
    component_id(name).replace('.', "_")
}

/// `events.*.created` → `events.{word1}.created`; `#` → `{rest}`.
fn address_of(pattern: &str) -> (String, Vec<String>) {
    let mut parameters = Vec::new();
    let words: Vec<String> = pattern
        .split('.')
        .map(|w| match w {
            "*" => {
                let name = format!("word{}", parameters.len() + 1);
                parameters.push(name.clone());
                format!("{{{name}}}")
            }
            "#" => {
                parameters.push("rest".to_string());
                "{rest}".to_string()
            }
            w => w.to_string(),
        })
        .collect();
    (words.join("."), parameters)
}

fn parameter_description(name: &str) -> &'static str {
    if name == "rest" {
        "zero or more dot-separated topic words (the pattern's `#`)"
    } else {
        "one topic word (the pattern's `*`)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ids() {
        assert_eq!(
            address_of("events.*.x.#"),
            (
                "events.{word1}.x.{rest}".to_string(),
                vec!["word1".into(), "rest".into()]
            )
        );
        assert_eq!(component_id("events.a b"), "events.a_b");
        assert_eq!(operation_id("send_a_events.b"), "send_a_events_b");
    }
}
