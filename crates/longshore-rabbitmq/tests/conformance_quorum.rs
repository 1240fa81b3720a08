//! The whole conformance suite again, with every subscription on quorum queues
//! (`?queue_type=quorum`): the same guarantees hold, and `Delivery::attempt` is exact.

mod common;

longshore_testkit::conformance!(
    longshore_rabbitmq::RabbitBroker,
    common::quorum_url(),
    raw: common::raw::raw,
);
