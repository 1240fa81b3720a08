//! A test harness for services built on longshore (feature `testing`).
//!
//! [`TestBus`] wraps any backend's publisher and subscriber (`memory://` by default, any URL),
//! records every message published, every delivery and how it was settled, and knows when
//! the system is quiet: [`TestBus::run_until_idle`] returns once everything published so far,
//! including what handlers publish in response, has been handled or dead-lettered, or fails
//! with an [`IdleTimeout`] listing what is pending. Each bus has its own namespace, so tests
//! share one broker in parallel. [`Given`] tests event-sourced aggregates on the store port,
//! and [`TestStore::wait_until_caught_up`] waits for catch-up subscriptions.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use longshore::prelude::*;
//! use longshore::testing::TestBus;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct OrderPlaced { order_id: String }
//! impl DomainEvent for OrderPlaced { const EVENT_TYPE: &'static str = "order_placed"; }
//!
//! let bus = TestBus::from_env().await?; // LONGSHORE_TEST_URL, default memory://
//! let _consumer = Consumer::new(bus.subscriber(), Subscription::new("billing", ["events.order_placed"]))
//!     .on(|_: OrderPlaced, _| async { Ok(()) })
//!     .start().await?;
//! bus.events().publish_typed(&OrderPlaced { order_id: "o-1".into() }, None).await?;
//! bus.run_until_idle(Duration::from_secs(30)).await?;
//! assert_eq!(bus.handled::<OrderPlaced>().count(), 1);
//! longshore::assert_published!(bus, OrderPlaced, |o| o.order_id == "o-1");
//! # Ok(()) }
//! ```
//!
//! Outcomes are read at the transport, from how each delivery is settled: ack is handled,
//! nack or a broker redelivery (attempt above 1) is retried, dead-letter is dead-lettered
//! with its reason. Retries a consumer runtime makes in process before settling are not seen.

mod assert;
mod bus;
mod given;
mod idle;
mod ledger;
mod names;
mod publisher;
mod record;
mod store;
mod subscriber;

pub use bus::{TestBus, ENV_TEST_URL};
pub use given::{Given, Then};
pub use idle::IdleTimeout;
pub use record::{Delivered, Outcome, Published, Records, Traffic};
pub use store::{NotCaughtUp, TestStore};
