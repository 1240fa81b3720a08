//! # longshore-testkit
//!
//! The conformance suite: the behaviours every longshore adapter keeps, as plain async
//! scenario functions, one module per behaviour group (as Apache OpenDAL's behaviour tests
//! are laid out), registered in one table with the capability each needs. An adapter runs the
//! whole suite in two lines:
//!
//! ```ignore
//! longshore_testkit::conformance!(my_adapter::MyBroker, my_url(), skip: [
//!     some_scenario => "why this backend cannot run it",
//! ]);
//! longshore_testkit::store_conformance!(store_factory);
//! ```
//!
//! Every generated test is `<group>_conformance::<scenario>`, so
//! `cargo nextest list -p <crate> | grep conformance` counts them. Each scenario works under
//! its own unique topics and subscription names, so all can share one broker and run in
//! parallel. A scenario the backend cannot run prints `SKIPPED: <scenario>: <why>`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod behaviour;
mod events;
pub mod fault;
mod fixture;
mod helpers;
pub mod observe;
pub mod own_broker;
pub mod proxy;
mod raw;
pub mod store;
mod suite;

pub use events::{OrderCancelled, OrderCreated};
pub use fixture::{skipped, Fixture, Scene};
pub use helpers::{
    drain_ids, eventually, expect_quiet, ids_of, lag_reaches, message, recv, recv_n,
    require_broker, spawn_acking, within, Names, QUIET, WAIT,
};
pub use raw::RawPublisher;
pub use store::StoreFactory;
pub use suite::{check_skip_list, Scenario, SCENARIOS, STORE_SCENARIOS};

/// The test events under their earlier path, which adapters' own tests import.
pub mod runtime {
    pub use crate::events::{OrderCancelled, OrderCreated};
}
