//! What a backend can do, declared by each adapter.

/// Capabilities of one backend. The conformance suite runs the tests a capability implies, and
/// the README prints them as a table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Backend name ("memory", "rabbitmq", "kafka", "nats", "postgres").
    pub backend: &'static str,
    /// Largest payload a publish accepts, in bytes.
    pub max_payload: usize,
    /// `nack` with a delay is honoured by the broker (not only by sleeping in process).
    pub native_delay: bool,
    /// A scheduled message ([`Publisher::publish_at`](crate::Publisher::publish_at)) is held
    /// by the backend until due. Without it, the consumer runtime gives an early message back
    /// with a delayed `nack` (durable where `native_delay` is).
    pub native_schedule: bool,
    /// [`Publisher::cancel`](crate::Publisher::cancel) can withdraw a scheduled message.
    pub cancel_schedule: bool,
    /// A new subscription can replay messages published before it existed.
    pub replay: bool,
    /// Messages with the same key are delivered in publish order to a single consumer.
    pub ordered_by_key: bool,
    /// The broker itself drops a re-published message with the same id inside a window.
    pub dedup_window: bool,
    /// The broker reports how many times a message was delivered.
    pub delivery_count: bool,
}

impl Capabilities {
    /// Capabilities with the common defaults: 1 MiB + headroom payloads, nothing optional.
    pub const fn new(backend: &'static str, max_payload: usize) -> Self {
        Capabilities {
            backend,
            max_payload,
            native_delay: false,
            native_schedule: false,
            cancel_schedule: false,
            replay: false,
            ordered_by_key: true,
            dedup_window: false,
            delivery_count: false,
        }
    }
}
