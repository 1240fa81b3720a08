//! # longshore-testkit
//!
//! The conformance suite: the contract every longshore adapter keeps, as plain async functions
//! that take a factory for the adapter under test, grouped by capability. An adapter crate runs
//! it in a few lines:
//!
//! ```ignore
//! // Returns None (after `require_broker` printed why) to skip outside CI.
//! async fn factory() -> Option<MyFactory> { MyFactory::from_env().await }
//! longshore_testkit::broker_conformance!(factory);
//! longshore_testkit::runtime_conformance!(factory);
//! longshore_testkit::store_conformance!(store_factory);
//! ```
//!
//! Every generated test's name contains `conformance`, so
//! `cargo test -p <crate> -- --list | grep conformance` counts them. Each test uses its own
//! unique topics and subscription names, so tests can share one broker and run in parallel.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::{
    async_trait, Delivery, DeliveryStream, EventStore, Inbox, Outbox, Publisher, Subscriber,
};

pub mod broker;
pub mod observability;
pub mod observe;
pub mod runtime;
pub mod store;

/// How long any single expected event may take before the test fails. Generous, because CI
/// machines are small and some brokers (Kafka group joins) take seconds; tests never wait this
/// long when the adapter is correct.
pub const WAIT: Duration = Duration::from_secs(60);

/// How long an absence check watches for a message that must not arrive.
pub const QUIET: Duration = Duration::from_millis(500);

/// Makes connected handles for the broker under test.
#[async_trait]
pub trait BrokerFactory: Send + Sync + 'static {
    /// A new publisher (its own connection where the adapter has one per handle).
    async fn publisher(&self) -> Arc<dyn Publisher>;
    /// A new subscriber on the same broker.
    async fn subscriber(&self) -> Arc<dyn Subscriber>;
}

/// Makes isolated event stores (their own schema or database per call).
#[async_trait]
pub trait StoreFactory: Send + Sync + 'static {
    /// A new, empty store.
    async fn store(&self) -> Arc<dyn EventStore>;
    /// A new, empty store whose appends fill an outbox, and that outbox, when the adapter
    /// has one.
    async fn store_with_outbox(&self) -> Option<(Arc<dyn EventStore>, Arc<dyn Outbox>)> {
        None
    }
    /// An inbox, when the adapter has one.
    async fn inbox(&self) -> Option<Arc<dyn Inbox>> {
        None
    }
}

/// Unique names for one test, so tests on a shared broker never see each other's messages.
#[derive(Clone, Debug)]
pub struct Names {
    prefix: String,
}

impl Default for Names {
    fn default() -> Self {
        Self::new()
    }
}

impl Names {
    /// Fresh names.
    pub fn new() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Names {
            prefix: format!("t{}", &id[..12]),
        }
    }

    /// A topic under this test's namespace: `<prefix>.<suffix>`.
    pub fn topic(&self, suffix: &str) -> String {
        format!("{}.{}", self.prefix, suffix)
    }

    /// A subscription name for this test: `<prefix>-<suffix>`.
    pub fn sub(&self, suffix: &str) -> String {
        format!("{}-{}", self.prefix, suffix)
    }

    /// The prefix itself (a single topic word).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Awaits `fut` for at most [`WAIT`], failing the test with `what` otherwise.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// Waits until `condition` holds, checking every 10 ms, failing the test after [`WAIT`]. For
/// states that no event announces (a counter reaching a value).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Polls `subscriber.lag(name)` until it is `want`, failing the test after [`WAIT`] with the
/// last answer: brokers report lag asynchronously (Kafka commits offsets on a timer, JetStream
/// and RabbitMQ count acks as they arrive), so there is no event to await.
pub async fn lag_reaches(subscriber: &dyn Subscriber, name: &str, want: u64) {
    let mut last = None;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            last = Some(subscriber.lag(name).await.expect("lag"));
            if last == Some(Some(want)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "lag of {name} stayed {last:?}, expected {want}"
    );
}

/// The next delivery; fails the test on a stream error, end or timeout.
pub async fn recv(stream: &mut DeliveryStream) -> Delivery {
    match within("a delivery", stream.next()).await {
        Some(Ok(d)) => d,
        Some(Err(e)) => panic!("delivery stream error: {e}"),
        None => panic!("delivery stream ended unexpectedly"),
    }
}

/// The next `n` deliveries, unsettled.
pub async fn recv_n(stream: &mut DeliveryStream, n: usize) -> Vec<Delivery> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(recv(stream).await);
    }
    out
}

/// Receives and acks `n` deliveries, returning their message ids in arrival order.
pub async fn drain_ids(stream: &mut DeliveryStream, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let d = recv(stream).await;
        ids.push(d.message.id.clone());
        d.ack().await.expect("ack");
    }
    ids
}

/// Asserts that nothing arrives for [`QUIET`].
pub async fn expect_quiet(stream: &mut DeliveryStream, why: &str) {
    if let Ok(Some(item)) = tokio::time::timeout(QUIET, stream.next()).await {
        match item {
            Ok(d) => panic!("{why}: unexpected delivery {d:?}"),
            Err(e) => panic!("{why}: unexpected stream error {e}"),
        }
    }
}

/// A message with a recognisable payload and a test header.
pub fn message(n: usize) -> longshore_core::Message {
    longshore_core::Message::new(format!("payload-{n}").into_bytes())
        .with_header("seq", n.to_string())
}

/// Generates `#[tokio::test]` functions named `conformance_<scenario>` for every broker
/// scenario in [`broker`], each calling `$factory().await` for a fresh `Option<factory>`.
#[macro_export]
macro_rules! broker_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!($factory, broker, broker_conformance:
            publish_then_subscribe_keeps_id_payload_headers_key,
            concurrent_publishers_and_subscribers,
            many_topics_at_once,
            nack_redelivers,
            nack_with_delay_redelivers,
            unacked_message_blocks_next_with_prefetch_one,
            reopen_repeatedly_without_loss,
            concurrent_subscribe_and_close,
            publisher_close_flushes_everything,
            topic_isolation,
            dropped_consumer_then_new_one_gets_everything,
            fanout_and_competing_consumers,
            wildcard_star,
            wildcard_hash,
            hash_matches_zero_words,
            several_patterns_on_one_subscription,
            dead_letter_carries_reason_and_topic,
            dead_letters_can_be_replayed,
            subscription_keeps_messages_before_consumer_starts,
            batch_publish_keeps_order,
            empty_batch_is_ok,
            large_payload_at_limit,
            oversized_payload_is_rejected,
            invalid_names_are_rejected,
            closed_publisher_refuses,
            ordering_per_key_single_consumer,
            redelivery_counts_attempts
        );
    };
}

/// Generates `#[tokio::test]` functions for the consumer-runtime scenarios in [`runtime`].
#[macro_export]
macro_rules! runtime_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!($factory, runtime, runtime_conformance:
            typed_dispatch_by_event_type,
            retry_then_success,
            retries_exhausted_go_to_dlq,
            permanent_error_goes_to_dlq_at_once,
            poison_body_dead_lettered_consumer_continues,
            malformed_inputs_are_dead_lettered_with_reason,
            unknown_event_type_dead_lettered,
            unknown_event_type_acked_when_configured,
            continue_after_repeated_errors,
            graceful_shutdown_drains_in_flight,
            shutdown_deadline_acks_nothing_unfinished,
            inbox_skips_duplicates,
            event_stream_forwards_in_batches,
            concurrency_is_bounded
        );
        $crate::__conformance_tests!($factory, observability, observability_conformance:
            trace_context_crosses_the_broker,
            metrics_count_every_outcome,
            health_reports_activity,
            lag_counts_waiting_messages
        );
    };
}

/// Generates `#[tokio::test]` functions for the event-store scenarios in [`store`].
#[macro_export]
macro_rules! store_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!($factory, store, store_conformance:
            append_and_read_back_intact,
            expected_version_no_stream,
            expected_version_exact,
            concurrent_appends_exactly_one_wins,
            idempotent_reappend,
            partial_duplicate_is_rejected,
            read_stream_from_and_limit,
            read_all_global_order,
            catch_up_resumes_from_checkpoint,
            catch_up_follows_live_appends,
            outbox_relay_publishes_every_event,
            inbox_remembers_processed_ids
        );
        $crate::__conformance_tests!($factory, observability, store_observability_conformance:
            outbox_and_catch_up_metrics
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:path, $group:ident, $module:ident: $($name:ident),+ $(,)?) => {
        $crate::__paste_tests!($factory, $group, $module, $($name),+);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __paste_tests {
    ($factory:path, $group:ident, $module:ident, $($name:ident),+) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    // `None` means the broker is unreachable outside CI: skipped, reason printed.
                    let Some(factory) = $factory().await else { return };
                    $crate::$group::$name(&factory).await;
                }
            )+
        }
    };
}

/// For integration tests that need a live broker: call with the result of a connection
/// attempt. Under `CI=true` an unreachable broker fails the test loudly; elsewhere the test is
/// skipped with a printed reason. Returns `None` when the test should return early.
pub fn require_broker<T, E: std::fmt::Display>(
    backend: &str,
    url: &str,
    attempt: Result<T, E>,
) -> Option<T> {
    match attempt {
        Ok(v) => Some(v),
        Err(e) => {
            let url = longshore_core::url::redact_url(url);
            if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0") {
                panic!("{backend} at {url} is required under CI but unreachable: {e}");
            }
            eprintln!("SKIPPED: {backend} at {url} is unreachable ({e}); set CI=true to make this a failure");
            None
        }
    }
}
