//! A subscriber that traces, counts and tracks every delivery of the subscriber it wraps.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use metrics::{Counter, Gauge};

use super::names;
use super::trace_context::{attach, TraceContext};
use crate::capabilities::Capabilities;
use crate::error::Error;
use crate::health::{Health, LastSeen};
use crate::message::Message;
use crate::subscriber::{Acker, DeadLetter, DeliveryStream, Subscriber, Subscription};

/// Wraps a subscriber with a `longshore.receive` span per delivery (joined to the trace the
/// message carries) and the consuming metrics: consumed, acked, nacked, dead-lettered, settle
/// failures, stream errors, in-flight and open consumers.
///
/// [`crate::observe::observe_subscriber`] builds one; the facade's `connect` does it for you.
pub struct ObservedSubscriber {
    inner: Arc<dyn Subscriber>,
    backend: &'static str,
    last_ack: Arc<LastSeen>,
}

struct SubscriptionMetrics {
    consumed: Counter,
    acked: Counter,
    nacked: Counter,
    dead_lettered: Counter,
    settle_failed: Counter,
    stream_errors: Counter,
    in_flight: Gauge,
    consumers: Gauge,
}

impl SubscriptionMetrics {
    fn new(backend: &'static str, subscription: &str) -> Self {
        let labels = [
            ("backend", backend.to_string()),
            ("subscription", subscription.to_string()),
        ];
        SubscriptionMetrics {
            consumed: metrics::counter!(names::CONSUMED, &labels),
            acked: metrics::counter!(names::ACKED, &labels),
            nacked: metrics::counter!(names::NACKED, &labels),
            dead_lettered: metrics::counter!(names::DEAD_LETTERED, &labels),
            settle_failed: metrics::counter!(names::SETTLE_FAILED, &labels),
            stream_errors: metrics::counter!(names::STREAM_ERRORS, &labels),
            in_flight: metrics::gauge!(names::IN_FLIGHT, &labels),
            consumers: metrics::gauge!(names::CONSUMERS, &labels),
        }
    }
}

impl ObservedSubscriber {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Subscriber>) -> Self {
        ObservedSubscriber {
            backend: inner.capabilities().backend,
            inner,
            last_ack: Arc::new(LastSeen::default()),
        }
    }
}

/// Lowers a gauge when dropped: the consumer stream or the delivery it counts is gone.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn up(gauge: &Gauge) -> Self {
        gauge.increment(1.0);
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[async_trait]
impl Subscriber for ObservedSubscriber {
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, Error> {
        let stream = self.inner.subscribe(subscription).await?;
        let m = Arc::new(SubscriptionMetrics::new(self.backend, &subscription.name));
        let consumer = GaugeGuard::up(&m.consumers);
        let backend = self.backend;
        let name: Arc<str> = Arc::from(subscription.name.as_str());
        let last_ack = self.last_ack.clone();
        let observed = stream.map(move |item| {
            // The guard lives as long as the stream: the consumer count drops when it does.
            let _consumer = &consumer;
            match item {
                Ok(delivery) => {
                    m.consumed.increment(1);
                    let span = tracing::info_span!(
                        "longshore.receive",
                        backend,
                        subscription = %name,
                        topic = %delivery.topic,
                        message_id = %delivery.message().id,
                        attempt = delivery.attempt,
                        trace_id = tracing::field::Empty,
                    );
                    // Parsing and recording the trace context is for the span alone.
                    let parent = if span.is_disabled() {
                        None
                    } else {
                        TraceContext::from_headers(&delivery.message().headers)
                    };
                    if let Some(parent) = &parent {
                        span.record("trace_id", parent.trace_id_hex());
                        attach(&span, parent);
                        span.in_scope(|| tracing::trace!("received"));
                    }
                    let in_flight = GaugeGuard::up(&m.in_flight);
                    let metrics = m.clone();
                    let last_ack = last_ack.clone();
                    Ok(delivery.map_acker(move |inner| {
                        Box::new(ObservedAcker {
                            inner,
                            metrics,
                            last_ack,
                            _in_flight: in_flight,
                        })
                    }))
                }
                Err(e) => {
                    m.stream_errors.increment(1);
                    Err(e)
                }
            }
        });
        Ok(observed.boxed())
    }

    async fn ensure_subscription(&self, subscription: &Subscription) -> Result<(), Error> {
        self.inner.ensure_subscription(subscription).await
    }

    async fn close(&self) -> Result<(), Error> {
        self.inner.close().await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn health(&self) -> Health {
        let mut health = self.inner.health().await;
        health.last_ack = health.last_ack.max(self.last_ack.get());
        health
    }

    async fn lag(&self, subscription: &str) -> Result<Option<u64>, Error> {
        self.inner.lag(subscription).await
    }

    async fn remove_subscription(&self, subscription: &str) -> Result<(), Error> {
        self.inner.remove_subscription(subscription).await
    }
}

/// Counts how a delivery was settled. Dropping it unsettled lowers in-flight and lets the
/// inner acker requeue the message, as before.
struct ObservedAcker {
    inner: Box<dyn Acker>,
    metrics: Arc<SubscriptionMetrics>,
    last_ack: Arc<LastSeen>,
    _in_flight: GaugeGuard,
}

#[async_trait]
impl Acker for ObservedAcker {
    async fn ack(self: Box<Self>) -> Result<(), Error> {
        let this = *self;
        let result = this.inner.ack().await;
        if result.is_ok() {
            this.last_ack.touch();
        }
        let metrics = this.metrics.clone();
        observe_settle(&metrics, &result, &metrics.acked);
        result
    }

    async fn nack(self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let this = *self;
        let result = this.inner.nack(delay).await;
        observe_settle(&this.metrics, &result, &this.metrics.nacked);
        result
    }

    fn hold(&mut self, message: Message) {
        self.inner.hold(message);
    }

    async fn dead_letter(
        self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let this = *self;
        let result = this.inner.dead_letter(message, topic, dead).await;
        observe_settle(&this.metrics, &result, &this.metrics.dead_lettered);
        result
    }
}

fn observe_settle(metrics: &SubscriptionMetrics, result: &Result<(), Error>, counter: &Counter) {
    match result {
        Ok(()) => counter.increment(1),
        Err(_) => metrics.settle_failed.increment(1),
    }
}
