//! W3C trace context (`traceparent`, `tracestate`) carried in message headers.
//!
//! Core depends only on `tracing`, so it cannot ask a span for its OpenTelemetry ids. It keeps
//! the context itself instead: the consumer runtime runs each handler with the context of the
//! message it handles ([`TraceContext::current`]), publishing continues that context, and every
//! publish / receive / handle span records `trace_id`. An OpenTelemetry bridge (the
//! `longshore-otel` crate) installs a [`Propagation`] so the ids are the real span ids instead.

use std::future::Future;
use std::sync::OnceLock;

use crate::message::Headers;

/// Header carrying the W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`).
pub const HEADER_TRACEPARENT: &str = crate::codec::HEADER_TRACEPARENT;
/// Header carrying the W3C `tracestate` (vendor data, passed through unchanged).
pub const HEADER_TRACESTATE: &str = "tracestate";

/// The longest `tracestate` passed on; the W3C spec lets carriers drop longer ones.
const MAX_TRACESTATE: usize = 512;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// One position in a distributed trace: the trace, the span that is the parent of whatever
/// happens next, and whether the trace is sampled.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
    tracestate: Option<String>,
}

impl std::fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.traceparent())
    }
}

impl TraceContext {
    /// A new trace (random ids, sampled).
    pub fn new_root() -> Self {
        TraceContext {
            trace_id: nonzero_u128().to_be_bytes(),
            span_id: nonzero_u64().to_be_bytes(),
            sampled: true,
            tracestate: None,
        }
    }

    /// The same trace with a new span id: the context a new operation (a publish, a handler)
    /// passes on.
    pub fn child(&self) -> Self {
        TraceContext {
            span_id: nonzero_u64().to_be_bytes(),
            ..self.clone()
        }
    }

    /// A context from its parts; `None` when an id is all zeros (invalid per W3C).
    pub fn from_parts(trace_id: [u8; 16], span_id: [u8; 8], sampled: bool) -> Option<Self> {
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            sampled,
            tracestate: None,
        })
    }

    /// Sets the `tracestate` carried along (dropped if longer than 512 bytes).
    pub fn with_tracestate(mut self, tracestate: Option<String>) -> Self {
        self.tracestate = tracestate.filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE);
        self
    }

    /// Parses a `traceparent` header value. Anything malformed gives `None`: a bad header from
    /// another service starts a new trace rather than failing the message.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        // Version 00 has exactly four fields; later versions may append more.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        u8::from_str_radix(version, 16).ok()?;
        let trace_id = hex_array::<16>(trace)?;
        let span_id = hex_array::<8>(parent)?;
        let [flags] = hex_array::<1>(flags)?;
        Self::from_parts(trace_id, span_id, flags & 1 == 1)
    }

    /// The context a message carries in its `traceparent` / `tracestate` headers.
    pub fn from_headers(headers: &Headers) -> Option<Self> {
        let ctx = Self::parse(headers.get(HEADER_TRACEPARENT)?)?;
        Some(ctx.with_tracestate(headers.get(HEADER_TRACESTATE).cloned()))
    }

    /// Writes `traceparent` (and `tracestate`, when there is one) into `headers`.
    pub fn write_to(&self, headers: &mut Headers) {
        self.write_with(self.traceparent(), headers);
    }

    /// [`TraceContext::write_to`] with the `traceparent` value already formatted (a batch
    /// formats it once for all its messages).
    pub(crate) fn write_with(&self, traceparent: String, headers: &mut Headers) {
        headers.insert(HEADER_TRACEPARENT.into(), traceparent);
        match &self.tracestate {
            Some(state) => headers.insert(HEADER_TRACESTATE.into(), state.clone()),
            None => headers.remove(HEADER_TRACESTATE),
        };
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push_str(if self.sampled { "-01" } else { "-00" });
        s
    }

    /// The trace id as 32 lowercase hex digits (what spans record as `trace_id`).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The trace id as hex, written only when something formats it: a span field that no
    /// subscriber records then costs neither the digits nor an allocation.
    pub(crate) fn trace_id_display(&self) -> impl std::fmt::Display + '_ {
        struct Hex<'a>(&'a [u8]);
        impl std::fmt::Display for Hex<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut digits = [0u8; 32];
                for (pair, b) in digits.chunks_exact_mut(2).zip(self.0) {
                    pair[0] = DIGITS[usize::from(b >> 4)];
                    pair[1] = DIGITS[usize::from(b & 0xf)];
                }
                // Only ASCII digits were written.
                f.write_str(std::str::from_utf8(&digits[..self.0.len() * 2]).unwrap_or(""))
            }
        }
        Hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The span id (the parent of what happens next).
    pub fn span_id(&self) -> [u8; 8] {
        self.span_id
    }

    /// Whether the trace is sampled.
    pub fn sampled(&self) -> bool {
        self.sampled
    }

    /// The `tracestate` carried along.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The context messages published now continue: the installed [`Propagation`]'s view of
    /// the current span, else the context the runtime set for the running handler (or that
    /// [`TraceContext::scope`] set), else none.
    pub fn current() -> Option<Self> {
        if let Some(p) = PROPAGATION.get() {
            if let Some(ctx) = p.span_context(&tracing::Span::current()) {
                return Some(ctx);
            }
        }
        CURRENT.try_with(Clone::clone).ok()
    }

    /// Runs `fut` with `self` as the current context, so what it publishes joins this trace.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }
}

/// Connects longshore's trace context to a tracing backend that has real span ids
/// (OpenTelemetry). Installed once per process with [`set_propagation`].
pub trait Propagation: Send + Sync + 'static {
    /// The context to propagate for `span`, if the backend knows one.
    fn span_context(&self, span: &tracing::Span) -> Option<TraceContext>;
    /// Makes `span` a child of the remote context `parent` (a received message's).
    fn set_parent(&self, span: &tracing::Span, parent: &TraceContext);
}

static PROPAGATION: OnceLock<Box<dyn Propagation>> = OnceLock::new();

/// Installs the process-wide [`Propagation`]. Returns `false` if one was already installed.
pub fn set_propagation(propagation: impl Propagation) -> bool {
    PROPAGATION.set(Box::new(propagation)).is_ok()
}

/// The context to write into a message published inside `span`: the propagation's view of
/// the span, else a child of the current context, else a new trace.
pub(crate) fn context_for_publish(span: &tracing::Span) -> TraceContext {
    if let Some(p) = PROPAGATION.get() {
        if let Some(ctx) = p.span_context(span) {
            return ctx;
        }
    }
    match CURRENT.try_with(Clone::clone) {
        Ok(ctx) => ctx.child(),
        Err(_) => TraceContext::new_root(),
    }
}

/// Makes `span` part of `parent`'s trace in the installed propagation, if any.
pub(crate) fn attach(span: &tracing::Span, parent: &TraceContext) {
    if let Some(p) = PROPAGATION.get() {
        p.set_parent(span, parent);
    }
}

fn nonzero_u128() -> u128 {
    loop {
        let v = fastrand::u128(..);
        if v != 0 {
            return v;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

/// Lowercase hex. By table, not `write!`: it runs for every message published and handled.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

fn push_hex(s: &mut String, bytes: &[u8]) {
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// Parses exactly `N` bytes of lowercase hex (W3C forbids uppercase).
fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_w3c_example() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(tp).expect("valid");
        assert_eq!(ctx.traceparent(), tp);
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.trace_id_display().to_string(), ctx.trace_id_hex());
        assert_eq!(ctx.span_id_hex(), "00f067aa0ba902b7");
        assert!(ctx.sampled());
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01",
        ] {
            assert!(
                TraceContext::parse(bad).is_none(),
                "{bad:?} must be rejected"
            );
        }
        // A later version may carry more fields.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some()
        );
    }

    #[test]
    fn headers_carry_tracestate_and_children_keep_the_trace() {
        let root = TraceContext::new_root().with_tracestate(Some("vendor=1".into()));
        let mut headers = Headers::new();
        root.child().write_to(&mut headers);
        let back = TraceContext::from_headers(&headers).expect("written");
        assert_eq!(back.trace_id(), root.trace_id());
        assert_ne!(back.span_id(), root.span_id());
        assert_eq!(back.tracestate(), Some("vendor=1"));
    }

    #[tokio::test]
    async fn scope_sets_the_current_context() {
        assert!(TraceContext::current().is_none());
        let ctx = TraceContext::new_root();
        let seen = ctx.clone().scope(async { TraceContext::current() }).await;
        assert_eq!(seen, Some(ctx));
    }
}
