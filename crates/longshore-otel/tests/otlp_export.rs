//! End to end on the embedded backend: spans exported over OTLP/HTTP to an in-process
//! collector form one trace from producer to consumer.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_publish_and_handle_share_one_otel_trace() {
    let (collector, guard) = common::setup().await;
    let ls = longshore::connect("memory://").await.expect("connect");
    common::one_trace_from_producer_to_consumer(&ls, &collector, &guard).await;
    guard.shutdown().expect("shutdown");
}
