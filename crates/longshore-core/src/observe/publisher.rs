//! A publisher that traces, counts and times every publish of the publisher it wraps.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use async_trait::async_trait;
use metrics::{Counter, Histogram};
use tracing::Instrument;

use super::names;
use super::trace_context::{context_for_publish, TraceContext, HEADER_TRACEPARENT};
use crate::capabilities::Capabilities;
use crate::error::{BatchError, Error};
use crate::health::{Health, LastSeen};
use crate::message::Message;
use crate::publisher::Publisher;
use crate::schedule::ScheduleId;

/// Topics beyond this many are counted without caching their metric handles, so a service
/// that publishes to unbounded topic names cannot grow this map without limit.
const MAX_CACHED_TOPICS: usize = 4096;

/// Wraps a publisher with the `longshore.publish` span, W3C trace context written into each
/// message's headers (unless it carries one already), and the publishing metrics.
///
/// [`crate::observe::observe_publisher`] builds one; the facade's `connect` does it for you.
pub struct ObservedPublisher {
    inner: Arc<dyn Publisher>,
    backend: &'static str,
    topics: RwLock<HashMap<String, Arc<TopicMetrics>>>,
    last_publish: LastSeen,
}

struct TopicMetrics {
    published: Counter,
    confirmed: Counter,
    failed: Counter,
    duration: Histogram,
}

impl TopicMetrics {
    fn new(backend: &'static str, topic: &str) -> Self {
        let labels = [
            ("backend", backend.to_string()),
            ("topic", topic.to_string()),
        ];
        TopicMetrics {
            published: metrics::counter!(names::PUBLISHED, &labels),
            confirmed: metrics::counter!(names::PUBLISH_CONFIRMED, &labels),
            failed: metrics::counter!(names::PUBLISH_FAILED, &labels),
            duration: metrics::histogram!(names::PUBLISH_DURATION, &labels),
        }
    }
}

impl ObservedPublisher {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Publisher>) -> Self {
        ObservedPublisher {
            backend: inner.capabilities().backend,
            inner,
            topics: RwLock::new(HashMap::new()),
            last_publish: LastSeen::default(),
        }
    }

    fn metrics(&self, topic: &str) -> Arc<TopicMetrics> {
        if let Ok(topics) = self.topics.read() {
            if let Some(m) = topics.get(topic) {
                return m.clone();
            }
        }
        let m = Arc::new(TopicMetrics::new(self.backend, topic));
        if let Ok(mut topics) = self.topics.write() {
            if topics.len() < MAX_CACHED_TOPICS {
                topics.entry(topic.to_string()).or_insert_with(|| m.clone());
            }
        }
        m
    }

    fn span(&self, topic: &str, message_id: &str, count: usize) -> tracing::Span {
        tracing::info_span!(
            "longshore.publish",
            backend = self.backend,
            topic = %topic,
            message_id = %message_id,
            count,
            trace_id = tracing::field::Empty,
        )
    }
}

/// Gives `message` a trace context (keeping one it already has) and records it on `span`.
fn stamp(span: &tracing::Span, message: &mut Message) {
    let ctx = match TraceContext::from_headers(&message.headers) {
        Some(ctx) => ctx,
        None => {
            let ctx = context_for_publish(span);
            ctx.write_to(&mut message.headers);
            ctx
        }
    };
    // Recording formats the id: skip it when nobody listens (the usual case in a hot loop).
    if !span.is_disabled() {
        span.record("trace_id", ctx.trace_id_hex());
    }
}

#[async_trait]
impl Publisher for ObservedPublisher {
    async fn publish(&self, topic: &str, mut message: Message) -> Result<(), Error> {
        let span = self.span(topic, &message.id, 1);
        stamp(&span, &mut message);
        let m = self.metrics(topic);
        m.published.increment(1);
        let started = Instant::now();
        let result = self
            .inner
            .publish(topic, message)
            .instrument(span.clone())
            .await;
        m.duration.record(started.elapsed());
        match &result {
            Ok(()) => {
                m.confirmed.increment(1);
                self.last_publish.touch();
            }
            Err(e) => {
                m.failed.increment(1);
                span.in_scope(|| tracing::warn!(error = %e, "publish failed"));
            }
        }
        result
    }

    async fn publish_batch(
        &self,
        topic: &str,
        mut messages: Vec<Message>,
    ) -> Result<(), BatchError> {
        let first_id = messages.first().map(|m| m.id.clone()).unwrap_or_default();
        let span = self.span(topic, &first_id, messages.len());
        // One trace context for the batch (one operation of the caller's); messages that
        // carry their own keep it.
        let ctx = context_for_publish(&span);
        if !span.is_disabled() {
            span.record("trace_id", ctx.trace_id_hex());
        }
        let traceparent = ctx.traceparent();
        for m in messages.iter_mut() {
            if !m.headers.contains_key(HEADER_TRACEPARENT) {
                ctx.write_with(traceparent.clone(), &mut m.headers);
            }
        }
        let total = messages.len() as u64;
        let m = self.metrics(topic);
        m.published.increment(total);
        let started = Instant::now();
        let result = self
            .inner
            .publish_batch(topic, messages)
            .instrument(span.clone())
            .await;
        m.duration.record(started.elapsed());
        let failed = result.as_ref().err().map_or(0, |e| e.failed.len() as u64);
        m.confirmed.increment(total.saturating_sub(failed));
        m.failed.increment(failed);
        if failed < total {
            self.last_publish.touch();
        }
        if let Err(e) = &result {
            span.in_scope(|| tracing::warn!(error = %e, failed, "batch publish partly failed"));
        }
        result
    }

    async fn cancel(&self, id: &ScheduleId) -> Result<bool, Error> {
        self.inner.cancel(id).await
    }

    async fn close(&self) -> Result<(), Error> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn health(&self) -> Health {
        let mut health = self.inner.health().await;
        health.last_publish = health.last_publish.max(self.last_publish.get());
        health
    }
}
