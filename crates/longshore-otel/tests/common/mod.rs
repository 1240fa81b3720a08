//! The end-to-end export scenario, shared by the per-backend test binaries (each binary
//! installs the global subscriber once).

pub mod collector;

use std::time::Duration;

use futures::StreamExt;
use longshore::observe::TraceContext;
use longshore::prelude::*;
use longshore_core::observe::Propagation;
use longshore_testkit::{within, Names};
use tokio::sync::mpsc;
use tracing::Instrument;

use collector::{Collector, ExportedSpan};

const SHUTDOWN: Duration = Duration::from_secs(10);
pub const SERVICE: &str = "longshore-otel-test";

/// Installs the exporter pointed at a fresh in-process collector.
pub async fn setup() -> (std::sync::Arc<Collector>, longshore_otel::OtelGuard) {
    let (collector, endpoint) = Collector::start().await;
    let guard = longshore_otel::init(longshore_otel::OtelConfig {
        endpoint: Some(endpoint),
        trace_filter: Some("info".into()),
        log_filter: Some("warn".into()),
        ..longshore_otel::OtelConfig::new(SERVICE)
    })
    .expect("init OpenTelemetry");
    (collector, guard)
}

/// Publishes one event inside a root span on `ls`, consumes it with a `Consumer` and reads
/// it raw on a second subscription; then checks what reached the collector: one OTel trace
/// from the root span through `longshore.publish` to the consumer's `longshore.handle`, and a
/// `traceparent` header holding the publish span's real ids.
pub async fn one_trace_from_producer_to_consumer(
    ls: &longshore::Longshore,
    collector: &Collector,
    guard: &longshore_otel::OtelGuard,
) {
    let n = Names::new();
    let topic = n.topic("orders.created");
    let consumed = Subscription::new(n.sub("otel"), [topic.clone()]);
    let raw = Subscription::new(n.sub("otel-raw"), [topic.clone()]);
    ls.subscriber
        .ensure_subscription(&consumed)
        .await
        .expect("ensure");
    ls.subscriber
        .ensure_subscription(&raw)
        .await
        .expect("ensure");
    let mut raw_stream = ls.subscriber.subscribe(&raw).await.expect("subscribe raw");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(ls.subscriber.clone(), consumed.clone())
        .on_event("order_created", move |ctx| {
            let tx = tx.clone();
            async move {
                tx.send((ctx.event.id, TraceContext::current()))
                    .map_err(HandlerError::permanent)?;
                Ok(())
            }
        })
        .start()
        .await
        .expect("start the consumer");

    let event = Event::new("order_created", serde_json::json!({"order_id": "o-1"}));
    let message_id = event.id.to_string();
    let root = tracing::info_span!("checkout");
    let root_ctx = longshore_otel::propagation()
        .span_context(&root)
        .expect("the root span has OTel ids");
    EventPublisher::new(ls.publisher.clone())
        .publish_to(&topic, &event)
        .instrument(root.clone())
        .await
        .expect("publish");
    drop(root);

    let delivery = within("the raw delivery", raw_stream.next())
        .await
        .expect("a delivery")
        .expect("no stream error");
    let traceparent = delivery
        .message()
        .headers
        .get(longshore::observe::HEADER_TRACEPARENT)
        .cloned()
        .expect("the message carries a traceparent");
    delivery.ack().await.expect("ack the raw delivery");
    drop(raw_stream);

    let (handled_id, in_handler) = within("the handler", rx.recv()).await.expect("handled");
    assert_eq!(handled_id, event.id);
    // The handle span ends when its task does; shutdown waits for that.
    consumer.shutdown(SHUTDOWN).await;
    guard.flush().expect("flush to the collector");

    let spans: Vec<ExportedSpan> = collector.spans();
    let of_message = |name: &str| -> Vec<ExportedSpan> {
        spans
            .iter()
            .filter(|s| s.name == name && s.attributes.get("message_id") == Some(&message_id))
            .cloned()
            .collect()
    };
    let [publish] = of_message("longshore.publish")
        .try_into()
        .unwrap_or_else(|found: Vec<_>| {
            panic!("one publish span for the message, got {found:?}; all spans: {spans:#?}")
        });
    let [handle] = of_message("longshore.handle")
        .try_into()
        .unwrap_or_else(|found: Vec<_>| {
            panic!("one handle span for the message, got {found:?}; all spans: {spans:#?}")
        });
    let receives: Vec<ExportedSpan> = of_message("longshore.receive")
        .into_iter()
        .filter(|s| s.attributes.get("subscription") == Some(&consumed.name))
        .collect();
    let [receive] = receives
        .try_into()
        .unwrap_or_else(|found: Vec<_>| panic!("one receive span for the consumer, got {found:?}"));

    // The producer side: the root span is the publish span's parent, in the root's trace.
    assert_eq!(publish.trace_id, root_ctx.trace_id_hex());
    assert_eq!(publish.parent_span_id, root_ctx.span_id_hex());
    assert!(spans
        .iter()
        .any(|s| s.name == "checkout" && s.span_id == root_ctx.span_id_hex()));
    assert_eq!(publish.service_name.as_deref(), Some(SERVICE));
    assert_eq!(publish.scope, longshore_otel::TRACER_NAME);

    // The message carries the publish span's real OTel ids.
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", publish.trace_id, publish.span_id),
        "traceparent is the publish span's context"
    );

    // The consumer side joins the same trace; its parent chain reaches the publish span.
    for span in [&handle, &receive] {
        assert_eq!(
            span.trace_id, publish.trace_id,
            "{} is in the producer's trace",
            span.name
        );
    }
    let chain = parent_chain(&spans, &handle);
    assert!(
        chain.contains(&publish.span_id),
        "the handle span descends from the publish span: chain {chain:?}, publish {}",
        publish.span_id
    );
    // What the ids say: receive and handle are both direct children of the publish span (the
    // receive span ends as the delivery is handed to the runtime, before handling starts).
    assert_eq!(handle.parent_span_id, publish.span_id);
    assert_eq!(receive.parent_span_id, publish.span_id);

    // The handler ran inside the handle span: what it would publish continues from there.
    let in_handler = in_handler.expect("the handler runs in a trace");
    assert_eq!(in_handler.trace_id_hex(), handle.trace_id);
    assert_eq!(in_handler.span_id_hex(), handle.span_id);
}

/// Span ids from `span`'s parent up to the root, as far as the exported spans go.
fn parent_chain(spans: &[ExportedSpan], span: &ExportedSpan) -> Vec<String> {
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() && chain.len() < spans.len() {
        chain.push(parent.clone());
        parent = spans
            .iter()
            .find(|s| s.span_id == parent)
            .map(|s| s.parent_span_id.clone())
            .unwrap_or_default();
    }
    chain
}
