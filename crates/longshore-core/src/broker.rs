//! The `Broker` trait every adapter implements, and the driver table entry the facade's
//! `connect(url)` dispatches through (as sqlx's drivers do).
//!
//! A broker handle is one connection (or pool) to one backend. Publishers and subscribers made
//! from it share that connection; `close` ends it. Backends that are also an event store
//! (Postgres, memory) hand out the store, outbox and inbox on the same pool.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::capabilities::Capabilities;
use crate::error::Error;
use crate::health::Health;
use crate::inbox::Inbox;
use crate::outbox::Outbox;
use crate::publisher::Publisher;
use crate::store::EventStore;
use crate::subscriber::Subscriber;

/// The event store of a backend that has one, with its outbox and inbox on the same pool.
#[derive(Clone)]
pub struct Stores {
    /// The event store; appends fill the outbox in the same transaction.
    pub store: Arc<dyn EventStore>,
    /// The transactional outbox.
    pub outbox: Arc<dyn Outbox>,
    /// The inbox (processed message ids per consumer).
    pub inbox: Arc<dyn Inbox>,
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

/// One connection to a backend: the factory of its publishers and subscribers.
///
/// Every adapter's broker handle implements it, so the facade's `connect`, the testkit and the
/// benchmark harness treat all backends alike. `connect_url` and `schemes` need a concrete
/// type (`Self: Sized`); everything else works through `Arc<dyn Broker>`.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// The URL schemes this adapter answers to (`["amqp", "amqps"]`), lowercase, without `://`.
    fn schemes() -> &'static [&'static str]
    where
        Self: Sized;

    /// Connects to the backend named by `url`. Fails with a typed error: `Config` for a bad
    /// URL, `Unauthorized`, `Connection` or `Timeout` for a broker that cannot be used.
    async fn connect_url(url: &str) -> Result<Self, Error>
    where
        Self: Sized;

    /// The backend's name ("memory", "rabbitmq", "kafka", "nats", "postgres").
    fn backend(&self) -> &'static str;

    /// A publisher on this connection.
    fn publisher(&self) -> Arc<dyn Publisher>;

    /// A subscriber on this connection.
    fn subscriber(&self) -> Arc<dyn Subscriber>;

    /// What the backend can do.
    fn capabilities(&self) -> Capabilities;

    /// The connection's health (not ready after [`Broker::close`]).
    async fn health(&self) -> Health;

    /// Closes the connection; handles made from it fail afterwards.
    async fn close(&self) -> Result<(), Error>;

    /// The event store, outbox and inbox on this connection, for backends that have them.
    fn stores(&self) -> Option<Stores> {
        None
    }
}

/// What [`Driver::connect`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = Result<Arc<dyn Broker>, Error>> + Send>>;

/// One row of a driver table: the schemes an adapter answers to and how to connect it.
#[derive(Clone, Copy)]
pub struct Driver {
    /// The URL schemes (lowercase, without `://`).
    pub schemes: &'static [&'static str],
    /// Connects to a URL with one of [`Driver::schemes`].
    pub connect: fn(String) -> ConnectFuture,
}

impl Driver {
    /// The driver of broker type `B`.
    pub fn of<B: Broker>() -> Driver {
        Driver {
            schemes: B::schemes(),
            connect: |url| {
                Box::pin(async move {
                    let broker = B::connect_url(&url).await?;
                    Ok(Arc::new(broker) as Arc<dyn Broker>)
                })
            },
        }
    }

    /// Whether this driver answers to `scheme` (compared case-insensitively).
    pub fn answers(&self, scheme: &str) -> bool {
        self.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme))
    }
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("schemes", &self.schemes)
            .finish()
    }
}
