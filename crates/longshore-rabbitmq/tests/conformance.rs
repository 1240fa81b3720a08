//! The whole conformance suite (transport, runtime, observability) against the real broker at
//! `AMQP_URL`.

mod common;

longshore_testkit::conformance!(
    longshore_rabbitmq::RabbitBroker,
    common::amqp_url(),
    raw: common::raw::raw,
);
