//! The whole conformance suite (transport, runtime, observability) against a real nats-server
//! with JetStream (`NATS_URL`), on the test stream `LONGSHORE_TEST` (prefix `lstest`).

mod common;

longshore_testkit::conformance!(
    longshore_nats::NatsBroker,
    common::nats_url(),
    raw: common::raw::raw,
);
