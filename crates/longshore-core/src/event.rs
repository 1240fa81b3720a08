//! The domain event envelope and typed events.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use crate::codec::CodecError;

/// A domain event: the seed's `DomainEvent` plus metadata.
///
/// `id`, `event_type`, `timestamp` and `data` travel in the body (the seed's `to_dict` form);
/// [`Metadata`] travels in message headers.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Unique id; UUID v7 by default so ids sort by creation time.
    pub id: Uuid,
    /// The type name handlers dispatch on (`order_created`).
    pub event_type: String,
    /// When the event happened, UTC, microsecond precision (what JSON, Python and Postgres keep).
    pub timestamp: DateTime<Utc>,
    /// The event's data as JSON.
    pub data: serde_json::Value,
    /// Ordering key, correlation and tracing metadata.
    pub metadata: Metadata,
}

/// Event metadata carried in message headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The aggregate this event belongs to; also the message ordering key.
    pub aggregate_id: Option<String>,
    /// Groups all events caused by one original request.
    pub correlation_id: Option<String>,
    /// The id of the event or command that caused this one.
    pub causation_id: Option<String>,
    /// W3C trace context (`traceparent`).
    pub traceparent: Option<String>,
    /// Free headers.
    pub headers: BTreeMap<String, String>,
}

impl Event {
    /// A new event with a fresh UUID v7 id and the current time.
    pub fn new(event_type: impl Into<String>, data: serde_json::Value) -> Self {
        Event {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            timestamp: now(),
            data,
            metadata: Metadata::default(),
        }
    }

    /// Builds an event from a typed domain event.
    pub fn from_typed<T: DomainEvent>(event: &T) -> Result<Self, CodecError> {
        let data = serde_json::to_value(event).map_err(|e| CodecError::Data {
            event_type: T::EVENT_TYPE.to_string(),
            message: e.to_string(),
        })?;
        Ok(Event::new(T::EVENT_TYPE, data))
    }

    /// Reads the data as the typed event `T`. Fails if the type name or the shape differs.
    pub fn to_typed<T: DomainEvent>(&self) -> Result<T, CodecError> {
        if self.event_type != T::EVENT_TYPE {
            return Err(CodecError::Data {
                event_type: self.event_type.clone(),
                message: format!("expected event type {:?}", T::EVENT_TYPE),
            });
        }
        T::deserialize(&self.data).map_err(|e| CodecError::Data {
            event_type: self.event_type.clone(),
            message: e.to_string(),
        })
    }

    /// Sets the aggregate id (the ordering key).
    pub fn with_aggregate_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.aggregate_id = Some(id.into());
        self
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.correlation_id = Some(id.into());
        self
    }

    /// Sets the causation id.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> Self {
        self.metadata.causation_id = Some(id.into());
        self
    }

    /// Adds a free header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.headers.insert(name.into(), value.into());
        self
    }

    /// The default topic for this event: `events.<event_type>`, as the seed's stream uses.
    pub fn default_topic(&self) -> String {
        format!("events.{}", self.event_type)
    }
}

/// The current time truncated to microseconds, so a timestamp survives JSON, Python and
/// Postgres round trips unchanged.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Ties a Rust type to its `event_type` string so services publish and handle their own structs.
///
/// ```
/// use longshore_core::DomainEvent;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct OrderCreated { order_id: String, total_cents: u64 }
/// impl DomainEvent for OrderCreated { const EVENT_TYPE: &'static str = "order_created"; }
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The `event_type` written on the wire.
    const EVENT_TYPE: &'static str;
}
