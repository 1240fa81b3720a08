//! Observability: trace context carried in message headers, metrics through the `metrics`
//! facade, and health.
//!
//! - [`observe_publisher`] / [`observe_subscriber`] wrap any backend's handles with the
//!   `longshore.publish` / `longshore.receive` spans and the transport metrics. The facade's
//!   `connect` returns wrapped handles; wrap by hand when building an adapter directly.
//! - The consumer runtime adds the `longshore.handle` span (a child of the trace the message
//!   carries), runs the handler inside that trace ([`TraceContext::current`]), and records
//!   retries, handler time and consumer lag.
//! - Metric names are in [`names`]; install a `metrics` recorder (a Prometheus exporter, say)
//!   before connecting, because handles are registered when a topic or subscription is first
//!   used.

mod log_filter;
pub mod names;
mod publisher;
mod subscriber;
mod trace_context;

use std::sync::Arc;

pub use log_filter::{log_directives, CAPPED_LOG_TARGETS, QUIETED_LOG_TARGETS};
pub use publisher::ObservedPublisher;
pub use subscriber::ObservedSubscriber;
pub(crate) use trace_context::attach;
pub use trace_context::{
    set_propagation, Propagation, TraceContext, HEADER_TRACEPARENT, HEADER_TRACESTATE,
};

use crate::publisher::Publisher;
use crate::subscriber::Subscriber;

/// Wraps `publisher` with tracing, trace-context headers and publishing metrics.
pub fn observe_publisher(publisher: Arc<dyn Publisher>) -> Arc<dyn Publisher> {
    Arc::new(ObservedPublisher::new(publisher))
}

/// Wraps `subscriber` with receive spans and consuming metrics.
pub fn observe_subscriber(subscriber: Arc<dyn Subscriber>) -> Arc<dyn Subscriber> {
    Arc::new(ObservedSubscriber::new(subscriber))
}
