//! The transport, runtime, observability and connection behaviours every broker adapter
//! keeps, one module per group. Each scenario is `pub async fn <name>(f: &Fixture)`; which
//! ones run, and which capability each needs, is the table in [`crate::conformance!`].

pub mod bad_input;
pub mod batch;
pub mod cloudevents;
pub mod connect;
pub mod dead_letters;
pub mod dispatch;
pub mod flow_control;
pub mod health;
pub mod lifecycle;
pub mod limits;
pub mod observability;
pub mod ordering;
pub mod publish;
pub mod relay;
pub mod retry;
pub mod routing;
pub mod settlement;
pub mod shutdown;
pub mod time;
