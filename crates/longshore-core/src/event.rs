//! The domain event envelope and typed events.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{de::DeserializeOwned, Serialize};
use uuid::Uuid;

use crate::error::CodecError;
use crate::event_data::Data;

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
    /// The event's data as JSON: kept as text when decoded, read as a `serde_json::Value`
    /// through `Deref` (see [`Data`]).
    pub data: Data,
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
            data: data.into(),
            metadata: Metadata::default(),
        }
    }

    /// Builds an event from a typed domain event.
    pub fn from_typed<T: DomainEvent>(event: &T) -> Result<Self, CodecError> {
        // Straight to JSON text: no `Value` tree in between.
        let data = Data::from_serialize(event).map_err(|e| CodecError::Data {
            event_type: T::EVENT_TYPE.to_string(),
            message: e.to_string(),
        })?;
        Ok(Event {
            id: Uuid::now_v7(),
            event_type: T::EVENT_TYPE.to_string(),
            timestamp: now(),
            data,
            metadata: Metadata::default(),
        })
    }

    /// Reads the data as the typed event `T`. Fails if the type name or the shape differs.
    pub fn to_typed<T: DomainEvent>(&self) -> Result<T, CodecError> {
        if self.event_type != T::EVENT_TYPE {
            return Err(CodecError::Data {
                event_type: self.event_type.clone(),
                message: format!("expected event type {:?}", T::EVENT_TYPE),
            });
        }
        self.data.to_typed().map_err(|e| CodecError::Data {
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

    /// Marks this event as caused by `cause` (typically `&ctx.event` in a handler): the
    /// causation id is the cause's id, the correlation id the cause's correlation id (or its
    /// id when it has none), so a whole chain of events shares one correlation id.
    pub fn caused_by(mut self, cause: &Event) -> Self {
        let correlation = cause
            .metadata
            .correlation_id
            .clone()
            .unwrap_or_else(|| cause.id.to_string());
        self.metadata.correlation_id = Some(correlation);
        self.metadata.causation_id = Some(cause.id.to_string());
        self
    }

    /// Gives this event an id derived from `cause`'s id and `index` (the event's place among
    /// those the cause produces), instead of a fresh one. A redelivered command then decides
    /// events with the same ids, and the store, idempotent by event id, appends nothing
    /// twice, even when the second decision differs from the first (the type is left out of
    /// the id on purpose: "reserved" the first time and "out of stock" on a redelivery are
    /// one outcome of one command). The id is a stable hash (the same in every process and
    /// version), shaped as a UUID v8.
    pub fn with_id_derived_from(mut self, cause: &Event, index: u32) -> Self {
        self.id = derived_id(cause.id, index);
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

/// FNV-1a over the cause id and the index, 128 bits: a hash whose output is fixed by its
/// definition (std's hashers may change between Rust versions, and a derived id must be the
/// same after an upgrade as before it).
fn derived_id(cause: Uuid, index: u32) -> Uuid {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    let index = index.to_be_bytes();
    let bytes = cause.as_bytes().iter().chain(&index);
    for byte in bytes {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    uuid::Builder::from_custom_bytes(hash.to_be_bytes()).into_uuid()
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
