//! The shared fixture every scenario runs on: one connected [`Broker`] of the backend under
//! test, made from a URL through the same trait the facade's `connect` uses, and the [`Scene`]
//! a scenario sets up on it, so each scenario states only what it tests.

use std::sync::Arc;

use longshore_core::{
    Broker, Capabilities, DeliveryStream, Driver, Error, Event, EventPublisher, Message, Publisher,
    Subscriber, Subscription,
};

use crate::helpers::{require_broker, Names};
use crate::raw::{RawPublisher, ThroughPublisher};

/// A connected broker under test. Scenarios take handles from it; a scenario that needs a
/// second connection calls [`Fixture::reconnect`].
#[derive(Clone)]
pub struct Fixture {
    broker: Arc<dyn Broker>,
    url: String,
    driver: Driver,
    raw: Option<Arc<dyn RawPublisher>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("backend", &self.broker.backend())
            .field("url", &longshore_core::url::redact_url(&self.url))
            .finish()
    }
}

impl Fixture {
    /// Connects a `B` to `url`. `None` (after printing why) when the broker is unreachable
    /// outside CI; under `CI=true` an unreachable broker fails the test.
    pub async fn connect<B: Broker>(url: &str) -> Option<Fixture> {
        let scheme = url.split_once("://").map_or("broker", |(s, _)| s);
        let broker = require_broker(scheme, url, B::connect_url(url).await)?;
        Some(Fixture {
            broker: Arc::new(broker),
            url: url.to_string(),
            driver: Driver::of::<B>(),
            raw: None,
        })
    }

    /// The fixture with the backend's raw client, for the bad-input scenarios.
    pub fn with_raw(mut self, raw: Arc<dyn RawPublisher>) -> Fixture {
        self.raw = Some(raw);
        self
    }

    /// The backend's raw client, or longshore's own publisher where the adapter gave none
    /// (then [`RawPublisher::bypasses_limits`] is false).
    pub fn raw(&self) -> Arc<dyn RawPublisher> {
        match &self.raw {
            Some(raw) => raw.clone(),
            None => Arc::new(ThroughPublisher(self.publisher())),
        }
    }

    /// The broker handle.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The backend's name, as [`Broker::backend`] reports it.
    pub fn backend(&self) -> &'static str {
        self.broker.backend()
    }

    /// The URL the fixture connected to (may hold credentials: never print it unredacted).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the backend can do.
    pub fn capabilities(&self) -> Capabilities {
        self.broker.capabilities()
    }

    /// A new publisher on the fixture's connection.
    pub fn publisher(&self) -> Arc<dyn Publisher> {
        self.broker.publisher()
    }

    /// A new subscriber on the fixture's connection.
    pub fn subscriber(&self) -> Arc<dyn Subscriber> {
        self.broker.subscriber()
    }

    /// Fresh names and a publisher and subscriber: what nearly every scenario starts from.
    pub fn scene(&self) -> Scene {
        Scene {
            names: Names::new(),
            publisher: self.publisher(),
            subscriber: self.subscriber(),
        }
    }

    /// A second, independent connection to the same backend.
    pub async fn reconnect(&self) -> Arc<dyn Broker> {
        (self.driver.connect)(self.url.clone())
            .await
            .expect("second connection to the broker under test")
    }

    /// Connects to another URL of the same backend (a wrong password, a closed port), for
    /// scenarios about connect errors.
    pub async fn connect_other(&self, url: &str) -> Result<Arc<dyn Broker>, Error> {
        (self.driver.connect)(url.to_string()).await
    }

    /// Whether the backend has the capability `scenario` needs (`has` reads it from
    /// [`Capabilities`]); prints `SKIPPED: <scenario>: <backend> lacks <capability>` when not.
    pub fn supports(
        &self,
        scenario: &str,
        capability: &str,
        has: impl FnOnce(&Capabilities) -> bool,
    ) -> bool {
        let supported = has(&self.capabilities());
        if !supported {
            skipped(scenario, &format!("{} lacks {capability}", self.backend()));
        }
        supported
    }
}

/// Prints the line every skipped scenario prints, so skips are visible in test output.
pub fn skipped(scenario: &str, reason: &str) {
    eprintln!("SKIPPED: {scenario}: {reason}");
}

/// What a scenario works with: its own unique names, and a publisher and subscriber on the
/// fixture's connection.
pub struct Scene {
    /// This scenario's unique topic and subscription names.
    pub names: Names,
    /// A publisher on the fixture's connection.
    pub publisher: Arc<dyn Publisher>,
    /// A subscriber on the fixture's connection.
    pub subscriber: Arc<dyn Subscriber>,
}

impl Scene {
    /// The topic `<prefix>.<suffix>`.
    pub fn topic(&self, suffix: &str) -> String {
        self.names.topic(suffix)
    }

    /// The subscription name `<prefix>-<suffix>`.
    pub fn sub(&self, suffix: &str) -> String {
        self.names.sub(suffix)
    }

    /// A subscription named `<prefix>-<name>` on the one topic `<prefix>.<name>`, and that topic.
    pub fn on(&self, name: &str) -> (String, Subscription) {
        let topic = self.topic(name);
        (topic.clone(), Subscription::new(self.sub(name), [topic]))
    }

    /// Makes `sub` exist on the broker, so messages published from now on are kept for it.
    pub async fn ensure(&self, sub: &Subscription) {
        self.subscriber
            .ensure_subscription(sub)
            .await
            .expect("ensure subscription");
    }

    /// [`Scene::on`], made to exist on the broker with [`Scene::ensure`].
    pub async fn ensured(&self, name: &str) -> (String, Subscription) {
        let (topic, sub) = self.on(name);
        self.ensure(&sub).await;
        (topic, sub)
    }

    /// An open stream of `sub` on this scene's subscriber.
    pub async fn subscribe(&self, sub: &Subscription) -> DeliveryStream {
        self.subscriber.subscribe(sub).await.expect("subscribe")
    }

    /// [`Scene::on`] with its stream open: the topic to publish to and what arrives there.
    pub async fn open(&self, name: &str) -> (String, DeliveryStream) {
        let (topic, sub) = self.on(name);
        (topic, self.subscribe(&sub).await)
    }

    /// An open stream of the dead letters of subscription `name`.
    pub async fn dead_letters(&self, name: &str) -> DeliveryStream {
        self.subscribe(&Subscription::dead_letters_of(name)).await
    }

    /// Publishes one message, failing the test on an error.
    pub async fn publish(&self, topic: &str, message: Message) {
        self.publisher
            .publish(topic, message)
            .await
            .expect("publish");
    }

    /// Publishes a batch, failing the test on an error.
    pub async fn publish_batch(&self, topic: &str, messages: Vec<Message>) {
        self.publisher
            .publish_batch(topic, messages)
            .await
            .expect("publish batch");
    }

    /// Publishes one event through [`Scene::events`], failing the test on an error.
    pub async fn publish_event(&self, topic: &str, event: &Event) {
        self.events()
            .publish_to(topic, event)
            .await
            .expect("publish event");
    }

    /// An event publisher on this scene's publisher.
    pub fn events(&self) -> EventPublisher {
        EventPublisher::new(self.publisher.clone())
    }
}
