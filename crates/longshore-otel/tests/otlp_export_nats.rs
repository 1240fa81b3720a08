//! End to end over NATS JetStream (`nats://127.0.0.1:4222`, or `NATS_URL`):
//! the trace context crosses a real broker in the message headers.
#![cfg(feature = "nats-tests")]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publish_and_handle_share_one_otel_trace() {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let Some(ls) = longshore_testkit::require_broker("nats", &url, longshore::connect(&url).await)
    else {
        return;
    };
    let (collector, guard) = common::setup().await;
    common::one_trace_from_producer_to_consumer(&ls, &collector, &guard).await;
    guard.shutdown().expect("shutdown");
}
