//! The Kafka adapter held to the whole conformance suite, against the broker at
//! `KAFKA_BROKERS` (default 127.0.0.1:9092).

mod common;

use common::factory;

longshore_testkit::broker_conformance!(factory);
longshore_testkit::runtime_conformance!(factory);
