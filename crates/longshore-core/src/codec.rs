//! Codecs turn [`Event`]s into [`Message`]s and back.
//!
//! The default [`JsonCodec`] writes exactly the seed's `DomainEvent.to_dict()` body
//! (`{"event_id","event_type","data","timestamp"}`) with metadata in headers, so Python
//! services built from the seed interoperate both ways ([`crate::seed`] holds that wire form).
//! [`CloudEventsCodec`] writes CloudEvents 1.0 ([`crate::cloudevents`]). Every codec decodes
//! the seed envelope and both CloudEvents modes, detected per message by its headers.

use crate::cloudevents::CloudEventsCodec;
use crate::error::CodecError;
use crate::event::Event;
use crate::message::Message;

pub(crate) use crate::seed::HEADER_TRACEPARENT;
pub use crate::seed::{
    format_timestamp, parse_timestamp, rfc3339, CONTENT_TYPE_JSON, HEADER_AGGREGATE_ID,
    HEADER_CAUSATION_ID, HEADER_CONTENT_TYPE, HEADER_CORRELATION_ID,
};

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

impl Codec for JsonCodec {
    fn encode(&self, event: &Event) -> Result<Message, CodecError> {
        crate::seed::encode_seed(event)
    }

    /// Reads the seed's envelope, or a CloudEvent in either mode (found by its headers; see
    /// [`crate::cloudevents`]), so peers writing either form interoperate.
    fn decode(&self, message: &Message) -> Result<Event, CodecError> {
        crate::cloudevents::decode_any(message)
    }
}

impl Codec for CloudEventsCodec {
    fn encode(&self, event: &Event) -> Result<Message, CodecError> {
        self.encode_event(event)
    }

    fn decode(&self, message: &Message) -> Result<Event, CodecError> {
        crate::cloudevents::decode_any(message)
    }
}
