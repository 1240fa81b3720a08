//! # longshore-postgres
//!
//! longshore's PostgreSQL adapter, on sqlx: an event store with one global order that
//! followers can trust, a transactional outbox, an inbox, and Postgres as a queue.
//!
//! - [`PgStore`]: [`longshore_core::EventStore`] and [`longshore_core::Outbox`]; a unit of work
//!   ([`PgStore::begin`]) commits a service's own writes, its events and their outbox rows in one
//!   transaction.
//! - [`PgInbox`]: [`longshore_core::Inbox`], and [`PgInbox::process_once`] inside the handler's
//!   transaction.
//! - [`PgBroker`]: [`longshore_core::Broker`] for `postgres://` and `postgresql://` URLs, with
//!   [`longshore_core::Publisher`] / [`longshore_core::Subscriber`] on tables, so a small service
//!   can use Postgres as its only broker. One URL opens one pool: the broker's
//!   [`PgBroker::store`] (and `Broker::stores`) share it.
//!
//! All tables live in one schema ([`PgConfig::schema`], URL `?schema=`, default `longshore`),
//! created and migrated by [`migrate`] (embedded with `sqlx::migrate!`). The default schema is
//! shared by every program using the same database: give each service its own. Schema names
//! are validated (`[a-z_][a-z0-9_]{0,39}`) and always double-quoted; every value is a bound
//! parameter.
//!
//! ## Ordering guarantee (`read_all`)
//!
//! Identity or sequence values are handed out when a row is inserted but become visible when
//! its transaction commits, in another order: a reader that reads "everything after position
//! N" can pass a position whose transaction commits a moment later and never see that event.
//! longshore prevents this with the **transaction-id watermark**. Every event row carries the
//! id of the transaction that wrote it (`tx_id xid8 DEFAULT pg_current_xact_id()`), and its
//! global position is `(tx_id << 16) | index within the transaction`, so positions sort by
//! transaction id first. `read_all` returns only rows whose `tx_id` is below
//! `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still running: every
//! transaction below it has finished, so the set of rows below the watermark is final, and any
//! event committed later has a larger transaction id and therefore a larger position than
//! everything already read. A follower thus sees every event exactly once, in one order, no
//! matter how commits interleave (the `xid8` value is cast through `text`, as sqlx has no
//! `xid8` type). Positions are sparse (gaps are normal) but strictly increasing. The price: a
//! follower does not see events past the oldest open *write* transaction of the whole server,
//! so long transactions delay followers (never lose events); keep transactions short.
//! Ordering by a plain identity with the same xmin filter would not be enough, because a
//! transaction may obtain its id before a later one and insert after it.
//!
//! ## Outbox guarantee
//!
//! An append writes the events, the stream's new version and one outbox row per event (topic
//! `events.<event_type>`, the message encoded with [`longshore_core::JsonCodec`]) in one
//! statement of one transaction: either all of it commits or none. The relay in core
//! ([`longshore_core::OutboxRelay`]) claims rows, publishes them through any
//! [`longshore_core::Publisher`] and deletes them only after the publisher confirmed them; a
//! relay that dies mid-batch leaves its claimed rows, which are claimed again (at once by a
//! relay with the same name, by any relay once the claim lease expires) and sent again:
//! at-least-once, never lost. Claims take a short transaction-scoped advisory lock so that
//! concurrent relays see each other's claims; a relay skips every row of an aggregate (message
//! key) whose earlier row another relay holds, so several relays never double-send in the
//! normal path and keep each aggregate's order. Appends to one stream serialize on its
//! `streams` row, so one stream's outbox rows are in version order.
//!
//! ## Example
//!
//! ```no_run
//! use longshore_core::{Event, EventStore, ExpectedVersion};
//! use longshore_postgres::{PgConfig, PgStore};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = PgStore::connect(PgConfig::from_url("postgres://postgres@127.0.0.1/test")?).await?;
//! let event = Event::new("order_created", serde_json::json!({"order_id": "o-1"}))
//!     .with_aggregate_id("order-o-1");
//! store.append("order-o-1", ExpectedVersion::NoStream, vec![event]).await?;
//! for recorded in store.read_all(0, 100).await? {
//!     println!("{} {}", recorded.position, recorded.event.event_type);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// Laid out on the adapter template: config, client (the one pool), broker (the handle),
// publisher, subscriber, acker, mapping, health, error. Beside them: `lease` (a consumer's
// leases and heartbeat), `queue_sql`, `hub` (LISTEN/NOTIFY), `migrate`, and the event store
// in `store` (the type), `append`, `read` (reading and catch-up), `outbox`, `unit_of_work`,
// `store_sql`, and `inbox`.
mod acker;
mod append;
mod broker;
mod client;
mod config;
mod error;
#[cfg(test)]
mod fuzz;
mod health;
mod hub;
mod inbox;
mod lease;
mod mapping;
mod migrate;
mod outbox;
mod publisher;
mod queue_sql;
mod read;
mod store;
mod store_sql;
mod subscriber;
mod unit_of_work;

pub use broker::PgBroker;
pub use config::{PgConfig, Schema, DEFAULT_SCHEMA, MAX_SCHEMA_LEN};
pub use error::PgError;
pub use inbox::PgInbox;
pub use mapping::pattern_regex;
pub use migrate::{migrate, MIGRATOR};
pub use publisher::PgPublisher;
pub use store::{PgStore, MAX_EVENTS_PER_TRANSACTION};
pub use subscriber::PgSubscriber;
pub use unit_of_work::PgUnitOfWork;

/// Backend name used in errors, health and capabilities.
pub const BACKEND: &str = "postgres";

/// Re-exported so services use the same sqlx version for their own queries.
pub use sqlx;

// `cargo test --doc` compiles the README's example.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
