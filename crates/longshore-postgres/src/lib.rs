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
//! - [`PgBroker`]: [`longshore_core::Publisher`] / [`longshore_core::Subscriber`] on tables, so a
//!   small service can use Postgres as its only broker.
//!
//! All tables live in one schema ([`PgConfig::schema`], default `longshore`), created and
//! migrated by [`migrate`] (embedded with `sqlx::migrate!`). Schema names are validated
//! (`[a-z_][a-z0-9_]{0,39}`) and always double-quoted; every value is a bound parameter.
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

pub mod config;
pub mod error;
mod health;
mod hub;
pub mod inbox;
pub mod queue;
pub mod store;

pub use config::{PgConfig, Schema};
pub use error::{map_error, map_store_error};
pub use inbox::PgInbox;
pub use queue::{PgBroker, PgPublisher, PgSubscriber};
pub use store::{migrate, PgStore, PgUnitOfWork, MAX_EVENTS_PER_TRANSACTION};

/// Backend name used in errors and capabilities.
pub const BACKEND: &str = "postgres";

/// Re-exported so services use the same sqlx version for their own queries.
pub use sqlx;
