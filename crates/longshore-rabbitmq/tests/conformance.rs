//! The whole conformance suite against the real broker at `AMQP_URL`.

mod common;

use common::suite_factory;

longshore_testkit::broker_conformance!(suite_factory);
longshore_testkit::runtime_conformance!(suite_factory);
