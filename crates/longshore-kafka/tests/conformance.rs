//! The Kafka adapter held to the whole conformance suite, against the broker at
//! `KAFKA_BROKERS` (default 127.0.0.1:9092; CI runs tansu, see `scripts/kafka-broker.sh`).
//!
//! One scenario is skipped, `concurrent_subscribe_and_close`: eight tasks join and leave one
//! group concurrently. On tansu 0.6 a group leader that leaves while others are joining stays
//! "leader" of the next generation: the remaining member's SyncGroup gets
//! REBALANCE_IN_PROGRESS forever (seen here with librdkafka's `cgrp` debug log: LeaveGroup
//! acknowledged, next JoinGroup response still names it). Apache Kafka removes the member on
//! LeaveGroup. Against Kafka, drop it from the skip list to run it.

mod common;

longshore_testkit::conformance!(longshore_kafka::KafkaBroker, common::url(), raw: common::raw::raw, skip: [
    concurrent_subscribe_and_close => "needs Apache Kafka: tansu 0.6 keeps a departed group leader under concurrent join/leave, wedging the group",
]);
