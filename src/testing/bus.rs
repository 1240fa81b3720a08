//! `TestBus`: a backend's publisher and subscriber, recorded and namespaced for one test.

use std::sync::Arc;
use std::time::Duration;

use longshore_core::{DomainEvent, Error, EventPublisher, Publisher, Subscriber};

use super::idle::{until_idle, IdleTimeout};
use super::ledger::Ledger;
use super::names::Namespace;
use super::publisher::TestPublisher;
use super::record::{typed, Delivered, Outcome, Published, Records, Traffic};
use super::store::TestStore;
use crate::connect::{connect, ConnectError, Longshore};

/// The environment variable [`TestBus::from_env`] reads: the backend URL the tests run on.
pub const ENV_TEST_URL: &str = "LONGSHORE_TEST_URL";

/// One test's view of a backend: hand [`TestBus::publisher`] and [`TestBus::subscriber`] to
/// the service under test, then [`TestBus::run_until_idle`] and read what happened.
///
/// Every topic and subscription name goes through the bus's own namespace (a random prefix),
/// so tests run in parallel on one shared broker without seeing each other's messages; the
/// service keeps using its own names, and handlers and records see them unprefixed.
///
/// Settlement is recorded at the transport: an ack is *handled*, a nack or a broker
/// redelivery (attempt > 1) is *retried*, a dead letter is *dead-lettered* with its reason.
/// Retries a consumer runtime makes in process, before settling, are not visible here.
pub struct TestBus {
    ls: Longshore,
    names: Namespace,
    ledger: Arc<Ledger>,
    publisher: Arc<dyn Publisher>,
    subscriber: Arc<dyn Subscriber>,
}

impl std::fmt::Debug for TestBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBus")
            .field("backend", &self.ls.backend)
            .field("prefix", &self.names.prefix())
            .finish()
    }
}

impl TestBus {
    /// A bus on a fresh in-memory backend.
    pub async fn memory() -> Result<TestBus, ConnectError> {
        TestBus::connect("memory://").await
    }

    /// A bus on the backend at `url` (any URL [`crate::connect`] takes).
    pub async fn connect(url: &str) -> Result<TestBus, ConnectError> {
        Ok(TestBus::new(connect(url).await?))
    }

    /// A bus on the backend named by `LONGSHORE_TEST_URL`, or in memory when it is unset.
    pub async fn from_env() -> Result<TestBus, ConnectError> {
        TestBus::connect(&TestBus::url_from_env()).await
    }

    /// The URL [`TestBus::from_env`] connects to.
    pub fn url_from_env() -> String {
        std::env::var(ENV_TEST_URL)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "memory://".to_string())
    }

    /// A bus over an existing connection (one made with [`crate::connect_with`], say).
    pub fn new(ls: Longshore) -> TestBus {
        let names = Namespace::fresh();
        let ledger = Arc::new(Ledger::default());
        let publisher = Arc::new(TestPublisher {
            inner: ls.publisher.clone(),
            ledger: ledger.clone(),
            names: names.clone(),
        });
        let subscriber = Arc::new(super::subscriber::TestSubscriber {
            inner: ls.subscriber.clone(),
            ledger: ledger.clone(),
            names: names.clone(),
        });
        TestBus {
            ls,
            names,
            ledger,
            publisher,
            subscriber,
        }
    }

    /// The publisher to give the service: records every message it publishes.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        self.publisher.clone()
    }

    /// The subscriber to give the service's consumers: records every delivery and outcome.
    pub fn subscriber(&self) -> Arc<dyn Subscriber> {
        self.subscriber.clone()
    }

    /// An [`EventPublisher`] on [`TestBus::publisher`].
    pub fn events(&self) -> EventPublisher {
        EventPublisher::new(self.publisher())
    }

    /// The connection underneath (its `publisher` and `subscriber` are *not* recorded).
    pub fn longshore(&self) -> &Longshore {
        &self.ls
    }

    /// The backend's name ("memory", "rabbitmq", …).
    pub fn backend(&self) -> &'static str {
        self.ls.backend
    }

    /// `name` made unique to this bus, for what the bus does not namespace itself: event
    /// store streams, checkpoint names.
    pub fn unique(&self, name: &str) -> String {
        format!("{}-{name}", self.names.prefix())
    }

    /// The backend's event store, recorded for [`TestStore::wait_until_caught_up`].
    pub fn store(&self) -> Result<TestStore, Error> {
        Ok(TestStore::new(self.ls.store()?))
    }

    /// Waits until every message published through the bus so far, including those the
    /// handlers publish in response, has been acked or dead-lettered by every subscription
    /// a consumer was opened on through the bus whose patterns match it, and no delivery is
    /// held by a handler. Event-driven: it wakes on each publish, delivery and settlement.
    ///
    /// Start the consumers before publishing: a subscription consumed later does not wait
    /// for earlier messages. A subscription only declared with `ensure_subscription` stands
    /// for another service (downstream of the one under test) and is not waited for; declare
    /// one where the broker refuses unroutable messages (RabbitMQ).
    pub async fn run_until_idle(&self, timeout: Duration) -> Result<(), IdleTimeout> {
        until_idle(&self.ledger, timeout).await
    }

    /// What is still in flight, one readable line each (empty when idle).
    pub fn pending(&self) -> Vec<String> {
        self.ledger.pending()
    }

    /// Everything recorded so far; its `Display` lists it.
    pub fn traffic(&self) -> Traffic {
        self.ledger.traffic()
    }

    /// The events of type `T` published through the bus, decoded, in order.
    pub fn published<T: DomainEvent>(&self) -> Records<T> {
        let traffic = self.traffic();
        let items = traffic
            .published
            .iter()
            .filter_map(|p| typed(&p.message))
            .collect();
        Records::new(items, traffic)
    }

    /// Every message published through the bus, events or not.
    pub fn published_messages(&self) -> Records<Published> {
        let traffic = self.traffic();
        Records::new(traffic.published.clone(), traffic)
    }

    /// Every delivery, in order of arrival, with its outcome.
    pub fn delivered(&self) -> Records<Delivered> {
        self.deliveries(|_| true)
    }

    /// The events of type `T` whose delivery was acked, decoded, once per ack.
    pub fn handled<T: DomainEvent>(&self) -> Records<T> {
        self.deliveries(|d| d.outcome == Outcome::Acked).of::<T>()
    }

    /// The deliveries that were dead-lettered; narrow with [`Records::with_reason`].
    pub fn dead_lettered(&self) -> Records<Delivered> {
        self.deliveries(|d| d.reason().is_some())
    }

    /// The deliveries that were nacked or were broker redeliveries (attempt above 1).
    pub fn retried(&self) -> Records<Delivered> {
        self.deliveries(|d| d.outcome == Outcome::Nacked || d.attempt > 1)
    }

    fn deliveries(&self, keep: impl Fn(&Delivered) -> bool) -> Records<Delivered> {
        let traffic = self.traffic();
        let items = traffic
            .delivered
            .iter()
            .filter(|d| keep(d))
            .cloned()
            .collect();
        Records::new(items, traffic)
    }

    /// Closes the bus's publisher and subscriber (their consumers stop). The ports have no
    /// delete, so what the bus declared stays on the broker under its unique prefix.
    pub async fn close(&self) -> Result<(), Error> {
        let published = self.ls.publisher.close().await;
        self.ls.subscriber.close().await?;
        published
    }
}
