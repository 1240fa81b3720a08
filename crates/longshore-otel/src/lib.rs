//! # longshore-otel
//!
//! OpenTelemetry for longshore. longshore's core depends only on `tracing` and keeps W3C trace
//! context in message headers itself; this crate connects that to OpenTelemetry:
//!
//! - [`init`] exports spans over OTLP/HTTP (protobuf) to a collector, installs a `tracing`
//!   subscriber with the OpenTelemetry layer and a stderr log layer, and installs
//!   [`OtelPropagation`];
//! - with it, the `traceparent` a published message carries holds the real OTel ids of its
//!   `longshore.publish` span, and the consumer's `longshore.receive` and `longshore.handle`
//!   spans are that span's children, so producer and consumer show up as one trace.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Endpoint from OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318).
//! let _otel = longshore_otel::init(longshore_otel::OtelConfig::new("billing"))?;
//! // ... connect with longshore and run; dropping the guard sends the last spans.
//! # Ok(()) }
//! ```
//!
//! Services that build their own subscriber use the pieces: [`tracer_provider`], [`layer`]
//! and [`propagation`] (install it with `longshore_core::observe::set_propagation`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod guard;
mod propagation;
mod setup;

pub use config::{ExportMode, OtelConfig};
pub use error::OtelError;
pub use guard::OtelGuard;
pub use propagation::{propagation, OtelPropagation};
pub use setup::{init, layer, tracer_provider, TRACER_NAME};

/// The OpenTelemetry crates this crate is built against, so callers use matching versions.
pub use opentelemetry;
/// The OpenTelemetry SDK this crate is built against.
pub use opentelemetry_sdk;
/// The `tracing` to OpenTelemetry bridge this crate is built against.
pub use tracing_opentelemetry;

// `cargo test --doc` compiles the README's examples.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
