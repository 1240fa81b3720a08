//! The Kafka adapter held to the conformance suite, against the broker at `KAFKA_BROKERS`
//! (default 127.0.0.1:9092; CI runs tansu, see `scripts/kafka-broker.sh`).
//!
//! The scenarios are listed here one by one (same names and modules as the testkit's macros
//! generate) only so that three of them can carry an `#[ignore]` with its reason; every other
//! scenario runs unchanged. Two assume an order between keyless messages, which Kafka does
//! not define across partitions (keyless messages are spread over the partitions, which
//! `fanout_and_competing_consumers` relies on); `tests/kafka.rs` runs each of them with one
//! key. One cannot pass on tansu (see its note).

mod common;

use common::factory;

macro_rules! scenarios {
    ($group:ident: $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(f) = factory().await else { return };
                longshore_testkit::$group::$name(&f).await;
            }
        )+
    };
}

mod runtime_conformance {
    use super::*;

    scenarios!(runtime:
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
        event_stream_forwards_in_batches,
        concurrency_is_bounded,
    );

    /// Publishes an already-processed event and then a fresh one, both without aggregate id
    /// (so without key), waits for the fresh one and shuts down expecting both handled: that
    /// assumes the first is consumed first, which Kafka does not define when the two land in
    /// different partitions (flaky here). `tests/kafka.rs` runs it with one aggregate id
    /// (`keyed_inbox_skips_duplicates`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "assumes order between keyless messages, which Kafka does not define across partitions; keyed variant in tests/kafka.rs"]
    async fn inbox_skips_duplicates() {
        let Some(f) = factory().await else { return };
        longshore_testkit::runtime::inbox_skips_duplicates(&f).await;
    }
}

mod broker_conformance {
    use super::*;

    scenarios!(broker:
        publish_then_subscribe_keeps_id_payload_headers_key,
        concurrent_publishers_and_subscribers,
        many_topics_at_once,
        nack_redelivers,
        nack_with_delay_redelivers,
        reopen_repeatedly_without_loss,
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
        redelivery_counts_attempts,
    );

    /// Eight tasks join and leave one group concurrently. On tansu 0.6 a group leader that
    /// leaves while others are joining stays "leader" of the next generation: the remaining
    /// member's SyncGroup gets REBALANCE_IN_PROGRESS forever (seen here with librdkafka's
    /// `cgrp` debug log: LeaveGroup acknowledged, next JoinGroup response still names it).
    /// Apache Kafka removes the member on LeaveGroup. Run with `--ignored` against Kafka.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Apache Kafka: tansu keeps a departed leader in the group under concurrent join/leave, wedging it"]
    async fn concurrent_subscribe_and_close() {
        let Some(f) = factory().await else { return };
        longshore_testkit::broker::concurrent_subscribe_and_close(&f).await;
    }

    /// The scenario publishes two keyless messages and asserts the first delivery is the
    /// first one published. Kafka orders only within a partition; keyless messages are spread
    /// over the partitions (which `fanout_and_competing_consumers` relies on), so their
    /// relative order is not defined and the assertion fails whenever the second message's
    /// partition is fetched first. `tests/kafka.rs` runs the same prefetch check with one
    /// key (`keyed_unacked_message_blocks_next_with_prefetch_one`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "assumes order between keyless messages, which Kafka does not define across partitions; keyed variant in tests/kafka.rs"]
    async fn unacked_message_blocks_next_with_prefetch_one() {
        let Some(f) = factory().await else { return };
        longshore_testkit::broker::unacked_message_blocks_next_with_prefetch_one(&f).await;
    }
}
