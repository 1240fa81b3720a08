//! # longshore-sqlite
//!
//! longshore's SQLite adapter, on sqlx (bundled SQLite): a queue, an event store with one
//! gap-free global order, a transactional outbox and an inbox, all in one embedded file, for
//! services that want durability without running a broker or a database server.
//!
//! - [`SqliteBroker`]: [`longshore_core::Broker`] for `sqlite://path/to/file.db`, with
//!   [`longshore_core::Publisher`] / [`longshore_core::Subscriber`] on a queue table (leases,
//!   redelivery, delayed nacks, dead letters to `dlq.<subscription>`, AMQP-style patterns).
//! - [`SqliteStore`]: [`longshore_core::EventStore`] and [`longshore_core::Outbox`]; a unit of
//!   work ([`SqliteStore::begin`]) commits a service's own writes, its events and their outbox
//!   rows in one transaction. [`SqliteInbox`]: [`longshore_core::Inbox`].
//!
//! The file is opened in WAL mode (readers never block the writer), with `busy_timeout` for
//! writers of other processes and `synchronous=NORMAL` by default (`FULL` via the URL). The
//! tables are created by the crate on connect, and a file written by a newer longshore is
//! refused ([`SqliteError::SchemaTooNew`]). SQLite has no LISTEN: writers wake this process's
//! consumers at once, other processes' rows are found by polling
//! ([`SqliteConfig::poll_interval`], 100 ms by default).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Laid out on the adapter template: config, client (the pools), broker (the handle),
// publisher, subscriber, acker, mapping, health, error. Beside them: `lease` (a consumer's
// leases and heartbeat), `queue_sql`, `wake` (in-process wake-ups), `migrate`, and the event
// store in `store` (the type), `append`, `read`, `outbox`, `unit_of_work` and `inbox`.
mod acker;
mod append;
mod broker;
mod client;
mod config;
mod error;
mod health;
mod inbox;
mod lease;
mod mapping;
mod migrate;
mod outbox;
mod publisher;
mod queue_sql;
mod read;
mod store;
mod subscriber;
mod unit_of_work;
mod wake;

pub use broker::SqliteBroker;
pub use config::{SqliteConfig, Synchronous};
pub use error::SqliteError;
pub use inbox::SqliteInbox;
pub use migrate::SCHEMA_VERSION;
pub use publisher::SqlitePublisher;
pub use store::SqliteStore;
pub use subscriber::SqliteSubscriber;
pub use unit_of_work::SqliteUnitOfWork;

/// Backend name used in errors, health and capabilities.
pub const BACKEND: &str = "sqlite";

/// Re-exported so services use the same sqlx version for their own queries.
pub use sqlx;

// `cargo test --doc` compiles the README's example.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
