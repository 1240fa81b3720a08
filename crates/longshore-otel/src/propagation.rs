//! longshore's trace context, read from and written to OpenTelemetry spans.

use std::str::FromStr;

use longshore_core::observe::{Propagation, TraceContext};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The [`Propagation`] backed by `tracing-opentelemetry`: messages carry the real OTel ids of
/// the `longshore.publish` span, and a consumer's receive and handle spans become its children
/// in the same OTel trace.
///
/// [`crate::init`] installs it; services that build their own subscriber install it with
/// `longshore_core::observe::set_propagation(longshore_otel::propagation())`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OtelPropagation;

/// The [`Propagation`] to install when building the subscriber yourself.
pub fn propagation() -> OtelPropagation {
    OtelPropagation
}

impl Propagation for OtelPropagation {
    fn span_context(&self, span: &tracing::Span) -> Option<TraceContext> {
        // A span with no OpenTelemetry layer behind it (disabled, or another subscriber) gives
        // an invalid context: the caller then falls back to longshore's own context.
        let cx = span.context();
        let otel = cx.span();
        let sc = otel.span_context();
        if !sc.is_valid() {
            return None;
        }
        let tracestate = sc.trace_state().header();
        TraceContext::from_parts(
            sc.trace_id().to_bytes(),
            sc.span_id().to_bytes(),
            sc.is_sampled(),
        )
        .map(|ctx| ctx.with_tracestate(Some(tracestate)))
    }

    fn set_parent(&self, span: &tracing::Span, parent: &TraceContext) {
        let flags = if parent.sampled() {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        // A tracestate that OTel rejects is dropped, as W3C lets a carrier do.
        let state = parent
            .tracestate()
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default();
        let remote = SpanContext::new(
            TraceId::from_bytes(parent.trace_id()),
            SpanId::from_bytes(parent.span_id()),
            flags,
            true,
            state,
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        // Fails only when the span has no OTel layer or was already started; the span then
        // keeps its local parent, and the message's trace id is still on its `trace_id` field.
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn a_child_of_a_remote_context_keeps_its_trace_flags_and_state() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry().with(crate::layer(provider.tracer("test")));
        let parent = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid")
            .with_tracestate(Some("vendor=abc".into()));
        let child = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("longshore.handle");
            propagation().set_parent(&span, &parent);
            propagation().span_context(&span)
        })
        .expect("the span has OTel ids");
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.span_id(), parent.span_id());
        assert!(child.sampled());
        assert_eq!(child.tracestate(), Some("vendor=abc"));
    }

    #[test]
    fn no_context_without_the_opentelemetry_layer() {
        let subscriber = tracing_subscriber::registry();
        let ctx = tracing::subscriber::with_default(subscriber, || {
            propagation().span_context(&tracing::info_span!("plain"))
        });
        assert_eq!(ctx, None);
    }
}
