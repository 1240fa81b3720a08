//! CloudEvents 1.0: the second codec, in binary and structured content mode, on every backend.
//!
//! [`CloudEventsCodec`] encodes events as CloudEvents; **every** codec's `decode` (the seed's
//! [`JsonCodec`](crate::JsonCodec) included) reads the seed envelope *and* both CloudEvents
//! modes, deciding per message from its headers, so a subscription can carry a mix while
//! services move from one form to the other one at a time. A service picks the form it
//! *writes* by URL (`?codec=cloudevents`, see [`codec_from_url`]) or in code
//! ([`EventPublisher::with_codec`](crate::EventPublisher::with_codec)).
//!
//! # The mapping from longshore's envelope
//!
//! | CloudEvents attribute | longshore [`Event`] |
//! | --- | --- |
//! | `specversion` | always `1.0`; anything else is [`CodecError::SpecVersion`] |
//! | `id` | `id` (a non-UUID id from a peer: a UUID derived from `source` and `id`, the original kept in header `ce-id`) |
//! | `source` | the codec's source (per service, `?ce_source=`), or header `ce-source` of a decoded event |
//! | `type` | `event_type` |
//! | `time` | `timestamp` (RFC 3339; an event without `time` gets its arrival time) |
//! | `subject` | `metadata.aggregate_id` (also the message key) |
//! | `datacontenttype` | `application/json` (another type from a peer: kept in header `ce-datacontenttype`, text data as a JSON string) |
//! | `dataschema`, other extensions | headers `ce-<name>` |
//! | `correlationid`, `causationid` | `metadata.correlation_id`, `metadata.causation_id` |
//! | `traceparent` | `metadata.traceparent`, and always the plain W3C `traceparent` header too |
//!
//! `id`, `source`, `type` and `specversion` are required: a message that lacks one is
//! [`CodecError::MissingAttribute`], dead-lettered with that reason like any undecodable one.
//! Free headers travel as plain transport headers in both modes, not as attributes.
//!
//! # Binary mode: attribute names per binding
//!
//! Each attribute is one header named by the binding's prefix; `datacontenttype` is the
//! `content-type` header (on RabbitMQ the `content_type` property); the body is the data.
//!
//! | backend | prefix | why |
//! | --- | --- | --- |
//! | Kafka | `ce_` | the Kafka protocol binding |
//! | RabbitMQ | `cloudEvents:` | the AMQP binding's application-property prefix; RabbitMQ hands AMQP 1.0 application properties to 0-9-1 clients as headers of the same name, so a header table entry is where AMQP 1.0 peers put and look for it |
//! | NATS | `ce-` | the NATS binding's binary mode (NATS 2.2+ headers), as the Go SDK writes it |
//! | memory, Postgres, SQLite | `ce-` | the HTTP binding's names, stored in the message's headers (a JSON object column) |
//!
//! The decoder accepts every prefix on every backend, case-insensitively, plus
//! `cloudEvents_` (the AMQP binding's later spelling, for clients whose property names
//! cannot hold `:`), so a message forwarded between brokers still decodes.
//!
//! # Structured mode
//!
//! The body is the JSON event format with `content-type: application/cloudevents+json;
//! charset=UTF-8`. A message without that header whose body is a JSON object with
//! `specversion` and no `event_id` (NATS's structured mode before headers) decodes too.
//!
//! # Detection, and what it costs
//!
//! A message is read as binary CloudEvents when a header ends in `specversion` under a known
//! prefix, as structured when its content type starts with `application/cloudevents`, and
//! as the seed's envelope otherwise: one pass over the headers' names, no body work.

mod attributes;
mod binary;
mod select;
mod structured;

use crate::error::CodecError;
use crate::event::Event;
use crate::message::{Headers, Message};

pub use select::{codec_from_url, CODEC_PARAM, SOURCE_PARAM};

/// The only CloudEvents version longshore reads and writes.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of structured-mode messages (the JSON event format).
pub const CONTENT_TYPE_STRUCTURED: &str = "application/cloudevents+json; charset=UTF-8";
/// The source written when none is configured.
pub const DEFAULT_SOURCE: &str = "/longshore";
/// Prefix of the headers in which a decoded event keeps the attributes that have no field in
/// [`Event`] (`ce-source`, `ce-dataschema`, extensions); an encoder writes them back.
pub const KEPT_PREFIX: &str = "ce-";

/// How a CloudEvent is laid on a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentMode {
    /// Attributes in headers, the data as the body.
    Binary,
    /// The whole event, attributes and data, as one JSON body.
    Structured,
}

/// Which protocol binding's header names binary mode uses (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HeaderBinding {
    /// `ce-`: HTTP and NATS; memory, Postgres and SQLite.
    #[default]
    Http,
    /// `ce_`: Kafka.
    Kafka,
    /// `cloudEvents:`: AMQP (RabbitMQ).
    Amqp,
}

impl HeaderBinding {
    /// The attribute header prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            HeaderBinding::Http => "ce-",
            HeaderBinding::Kafka => "ce_",
            HeaderBinding::Amqp => "cloudEvents:",
        }
    }

    /// The binding of a backend, by its name ([`Capabilities::backend`](crate::Capabilities)).
    pub fn for_backend(backend: &str) -> Self {
        match backend {
            "kafka" => HeaderBinding::Kafka,
            "rabbitmq" => HeaderBinding::Amqp,
            _ => HeaderBinding::Http,
        }
    }
}

/// Every prefix the decoder accepts (lowercase; compared case-insensitively).
const PREFIXES: [&str; 4] = ["ce-", "ce_", "cloudevents:", "cloudevents_"];

/// Encodes events as CloudEvents 1.0 in one [`ContentMode`]; decodes anything (see the module
/// docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudEventsCodec {
    mode: ContentMode,
    binding: HeaderBinding,
    source: String,
}

impl CloudEventsCodec {
    /// Binary content mode, `ce-` headers, source [`DEFAULT_SOURCE`].
    pub fn binary() -> Self {
        CloudEventsCodec {
            mode: ContentMode::Binary,
            binding: HeaderBinding::Http,
            source: DEFAULT_SOURCE.to_string(),
        }
    }

    /// Structured content mode (`application/cloudevents+json`), source [`DEFAULT_SOURCE`].
    pub fn structured() -> Self {
        CloudEventsCodec {
            mode: ContentMode::Structured,
            ..Self::binary()
        }
    }

    /// A codec in `mode`.
    pub fn new(mode: ContentMode) -> Self {
        match mode {
            ContentMode::Binary => Self::binary(),
            ContentMode::Structured => Self::structured(),
        }
    }

    /// Sets the `source` written on events that do not carry their own (a URI-reference
    /// naming this service, e.g. `/billing` or `urn:acme:billing`). Empty is refused.
    pub fn with_source(mut self, source: impl Into<String>) -> Result<Self, CodecError> {
        let source = source.into();
        if source.trim().is_empty() {
            return Err(CodecError::MissingAttribute("source"));
        }
        self.source = source;
        Ok(self)
    }

    /// Uses `binding`'s header names in binary mode.
    pub fn with_binding(mut self, binding: HeaderBinding) -> Self {
        self.binding = binding;
        self
    }

    /// Uses the header names of the backend named `backend` (`Longshore::backend`,
    /// `Capabilities::backend`).
    pub fn for_backend(self, backend: &str) -> Self {
        self.with_binding(HeaderBinding::for_backend(backend))
    }

    /// The content mode.
    pub fn mode(&self) -> ContentMode {
        self.mode
    }

    /// The binary-mode header binding.
    pub fn binding(&self) -> HeaderBinding {
        self.binding
    }

    /// The configured source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Encodes in this codec's mode (what its [`Codec`](crate::Codec) impl does).
    pub(crate) fn encode_event(&self, event: &Event) -> Result<Message, CodecError> {
        match self.mode {
            ContentMode::Binary => binary::encode(event, self.binding.prefix(), &self.source),
            ContentMode::Structured => structured::encode(event, &self.source),
        }
    }
}

/// What every codec's `decode` does: CloudEvents when the headers say so, else the seed's
/// envelope; a body the seed's decoder refuses that is a structured CloudEvent sent without a
/// content type (NATS's structured mode before headers) is read as that. The detection is one
/// pass over the header names; the fallback runs on the error path only.
pub(crate) fn decode_any(message: &Message) -> Result<Event, CodecError> {
    if let Some(found) = detect(&message.headers) {
        return decode_detected(message, found);
    }
    match crate::seed::decode_seed(message) {
        Err(CodecError::Malformed(why)) if structured::looks_structured(&message.payload) => {
            structured::decode(message).map_err(|e| match e {
                // Neither form: say what the seed's decoder said too.
                CodecError::Malformed(ce) => {
                    CodecError::Malformed(format!("{why} (as a structured CloudEvent: {ce})"))
                }
                other => other,
            })
        }
        other => other,
    }
}

/// The form a message's headers announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    /// Binary mode.
    Binary,
    /// Structured mode.
    Structured,
}

/// Finds CloudEvents by headers alone: a `<prefix>specversion` header, or a CloudEvents
/// content type. `None` for the seed's envelope. One pass over the names; no allocation.
pub(crate) fn detect(headers: &Headers) -> Option<Detected> {
    const SPECVERSION: &str = "specversion";
    let mut binary = false;
    for (name, value) in headers {
        let n = name.len();
        if n > SPECVERSION.len() && name.is_char_boundary(n - SPECVERSION.len()) {
            let (prefix, tail) = name.split_at(n - SPECVERSION.len());
            if tail.eq_ignore_ascii_case(SPECVERSION)
                && PREFIXES.iter().any(|p| prefix.eq_ignore_ascii_case(p))
            {
                binary = true;
            }
        }
        // Structured wins: a structured message may repeat its attributes as headers (the
        // AMQP and Kafka bindings allow it), and its content type says which mode it is.
        if name == crate::seed::HEADER_CONTENT_TYPE && is_cloudevents_content_type(value) {
            return Some(Detected::Structured);
        }
    }
    binary.then_some(Detected::Binary)
}

/// `application/cloudevents` followed by `+json`, `-batch+json`, parameters, …
fn is_cloudevents_content_type(value: &str) -> bool {
    const CE: &str = "application/cloudevents";
    value.len() >= CE.len()
        && value.is_char_boundary(CE.len())
        && value[..CE.len()].eq_ignore_ascii_case(CE)
}

/// Decodes a message whose headers announced CloudEvents.
fn decode_detected(message: &Message, found: Detected) -> Result<Event, CodecError> {
    match found {
        Detected::Binary => binary::decode(message),
        Detected::Structured => structured::decode(message),
    }
}

#[cfg(test)]
mod tests;
