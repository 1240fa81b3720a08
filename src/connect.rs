//! `connect(url)`: one call, any backend compiled in, dispatched through the driver table.

use std::sync::Arc;

use longshore_core::memory::MemoryInbox;
use longshore_core::observe::{observe_publisher, observe_subscriber};
use longshore_core::url::redact_url;
use longshore_core::{Broker, EventStore, Inbox, Outbox, Publisher, Stores, Subscriber};

use crate::config::Config;
use crate::drivers;

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL's scheme is not one longshore knows.
    #[error("unknown scheme in {url}: expected memory://, amqp://, amqps://, kafka://, nats://, postgres:// or sqlite://")]
    UnknownScheme {
        /// The URL, redacted.
        url: String,
    },
    /// The scheme's adapter was not compiled in.
    #[error("{scheme}:// needs the `{feature}` feature of the longshore crate (cargo add longshore --features {feature})")]
    FeatureDisabled {
        /// The scheme.
        scheme: String,
        /// The cargo feature to enable.
        feature: &'static str,
    },
    /// The backend refused or could not be reached.
    #[error(transparent)]
    Backend(#[from] longshore_core::Error),
}

/// Handles on one backend, as trait objects, so service code never names a broker.
///
/// | handle | what | shape |
/// | --- | --- | --- |
/// | [`publisher`](Longshore::publisher) | publishes messages / events | field, always there |
/// | [`subscriber`](Longshore::subscriber) | opens subscriptions for [`Consumer`](crate::Consumer)s | field, always there |
/// | [`store()`](Longshore::store) | the event store (aggregates, `read_all`, catch-up) | `Result`: an error names what to set |
/// | [`outbox()`](Longshore::outbox) | rows the store's appends wrote, for an [`OutboxRelay`](crate::OutboxRelay) | `Result`: an error names what to set |
/// | [`inbox()`](Longshore::inbox) | message ids already handled, for idempotent consumers | `Result`; always `Ok` today (in memory where the backend keeps none) |
/// | [`broker()`](Longshore::broker) | the broker handle behind them | reference |
/// | [`health()`](Longshore::health) | broker, store and every watched consumer and relay | async |
/// | [`watch_consumer`](Longshore::watch_consumer), [`spawn_relay`](Longshore::spawn_relay), [`watch_relay`](Longshore::watch_relay) | add a consumer or relay to `health()` | `spawn_relay` is a `Result` like `outbox()` |
///
/// The three optional parts answer alike, `Result<Arc<dyn _>, Error>`, so a service that
/// needs one writes `ls.store()?` and gets `Error::Config` naming the URL to set where the
/// backend has none.
///
/// The publisher and subscriber are observed (see `longshore::observe`): spans, W3C trace
/// context in headers, and metrics, with the same names on every backend.
#[derive(Clone)]
pub struct Longshore {
    /// Backend name ("memory", "rabbitmq", "kafka", "nats", "postgres", "sqlite").
    pub backend: &'static str,
    /// Publishes messages.
    pub publisher: Arc<dyn Publisher>,
    /// Opens consumers.
    pub subscriber: Arc<dyn Subscriber>,
    broker: Arc<dyn Broker>,
    stores: Option<Stores>,
    inbox: Arc<dyn Inbox>,
    url: String,
    pub(crate) watched: Arc<crate::watched::Watched>,
}

impl std::fmt::Debug for Longshore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Longshore")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .field("store", &self.stores.is_some())
            .finish()
    }
}

impl Longshore {
    /// The event store, or a configuration error naming what to set.
    pub fn store(&self) -> Result<Arc<dyn EventStore>, longshore_core::Error> {
        self.stores
            .as_ref()
            .map(|s| s.store.clone())
            .ok_or_else(|| {
                longshore_core::Error::Config(format!(
                    "{} has no event store: set {} (e.g. postgres://…) or use memory://",
                    self.url,
                    crate::config::ENV_STORE_URL
                ))
            })
    }

    /// The store's outbox (filled in the same transaction as appends), or a configuration
    /// error naming what to set.
    pub fn outbox(&self) -> Result<Arc<dyn Outbox>, longshore_core::Error> {
        self.stores
            .as_ref()
            .map(|s| s.outbox.clone())
            .ok_or_else(|| {
                longshore_core::Error::Config(format!(
                    "{} has no event store and so no outbox: set {} (e.g. postgres://…) or use memory://",
                    self.url,
                    crate::config::ENV_STORE_URL
                ))
            })
    }

    /// An inbox for idempotent consumers: the store's where it has one, else in memory (so
    /// always `Ok` today; a `Result` like [`Longshore::store`] and [`Longshore::outbox`]).
    pub fn inbox(&self) -> Result<Arc<dyn Inbox>, longshore_core::Error> {
        Ok(self.inbox.clone())
    }

    /// The broker handle behind the publisher and subscriber.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The backend URL, redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The stores, for `health.rs`.
    pub(crate) fn stores_part(&self) -> Option<&Stores> {
        self.stores.as_ref()
    }

    /// Closes the backend connection; every handle made from it fails afterwards.
    pub async fn close(&self) -> Result<(), longshore_core::Error> {
        self.broker.close().await
    }
}

/// Connects to the backend named by `url` (see [`Config::url`]).
pub async fn connect(url: &str) -> Result<Longshore, ConnectError> {
    connect_with(&Config::new(url)).await
}

/// Connects with a full [`Config`]: the broker at `url`, and the event store of the backend
/// at `store_url` when it is set (else the broker's own store, where it has one).
pub async fn connect_with(config: &Config) -> Result<Longshore, ConnectError> {
    // `?codec=` / `?ce_source=` are longshore's, not the adapter's: taken out here.
    let (broker_url, codec) = longshore_core::cloudevents::codec_from_url(&config.url)?;
    // A named service keeps its store (events, outbox, inbox) in a Postgres schema of its
    // own, so no other service's relay claims its rows; the broker side (a postgres:// queue)
    // stays where the URL says, since that is where services meet.
    let service = config.service.as_deref();
    let store_url = config.store_url.as_deref().unwrap_or(&broker_url);
    crate::config::warn_if_shared(store_url, service);
    let own_store = crate::config::with_service_schema(store_url, service);
    let broker = open(&broker_url).await?;
    let mut stores = broker.stores();
    if config.store_url.is_some() || own_store != broker_url {
        let store_url = &own_store;
        let store_backend = open(store_url).await?;
        stores = Some(store_backend.stores().ok_or_else(|| {
            longshore_core::Error::Config(format!(
                "{} has no event store: use postgres:// or memory:// as the store URL",
                redact_url(store_url)
            ))
        })?);
    }
    let inbox = match &stores {
        Some(s) => s.inbox.clone(),
        None => Arc::new(MemoryInbox::default()),
    };
    let mut publisher = observe_publisher(broker.publisher());
    if let Some(codec) = codec {
        let codec = codec.for_backend(broker.backend());
        publisher = Arc::new(crate::codec::CodecPublisher {
            inner: publisher,
            codec: Arc::new(codec),
        });
    }
    Ok(Longshore {
        backend: broker.backend(),
        publisher,
        subscriber: observe_subscriber(broker.subscriber()),
        broker,
        stores,
        inbox,
        url: redact_url(&config.url),
        watched: crate::watched::watched(),
    })
}

/// Opens `url` with the driver the table has for its scheme.
async fn open(url: &str) -> Result<Arc<dyn Broker>, ConnectError> {
    let unknown = || ConnectError::UnknownScheme {
        url: redact_url(url),
    };
    let (scheme, _) = url.split_once("://").ok_or_else(unknown)?;
    let row = drivers::table()
        .into_iter()
        .find(|row| row.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)))
        .ok_or_else(unknown)?;
    let driver = row.driver.ok_or_else(|| ConnectError::FeatureDisabled {
        scheme: scheme.to_string(),
        feature: row.feature,
    })?;
    Ok((driver.connect)(url.to_string()).await?)
}
