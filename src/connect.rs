//! `connect(url)`: one call, any backend compiled in.

use std::sync::Arc;

use longshore_core::memory::{MemoryBroker, MemoryInbox, MemoryStore};
use longshore_core::observe::{observe_publisher, observe_subscriber, Health};
use longshore_core::url::redact_url;
use longshore_core::{EventStore, Inbox, Outbox, Publisher, Subscriber};

use crate::config::Config;

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL's scheme is not one longshore knows.
    #[error("unknown scheme in {url}: expected memory://, amqp://, amqps://, kafka://, nats:// or postgres://")]
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
/// The publisher and subscriber are observed (see `longshore::observe`): spans, W3C trace
/// context in headers, and metrics, with the same names on every backend.
#[derive(Clone)]
pub struct Longshore {
    /// Backend name ("memory", "rabbitmq", "kafka", "nats", "postgres").
    pub backend: &'static str,
    /// Publishes messages.
    pub publisher: Arc<dyn Publisher>,
    /// Opens consumers.
    pub subscriber: Arc<dyn Subscriber>,
    store: Option<Arc<dyn EventStore>>,
    outbox: Option<Arc<dyn Outbox>>,
    inbox: Arc<dyn Inbox>,
    url: String,
}

impl std::fmt::Debug for Longshore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Longshore")
            .field("backend", &self.backend)
            .field("url", &self.url)
            .field("store", &self.store.is_some())
            .finish()
    }
}

impl Longshore {
    /// The event store, or a configuration error naming what to set.
    pub fn store(&self) -> Result<Arc<dyn EventStore>, longshore_core::Error> {
        self.store.clone().ok_or_else(|| {
            longshore_core::Error::Config(format!(
                "{} has no event store: set {} (e.g. postgres://…) or use memory://",
                self.url,
                crate::config::ENV_STORE_URL
            ))
        })
    }

    /// The store's outbox (filled in the same transaction as appends), if it has one.
    pub fn outbox(&self) -> Option<Arc<dyn Outbox>> {
        self.outbox.clone()
    }

    /// An inbox for idempotent consumers (the store's where it has one, else in-memory).
    pub fn inbox(&self) -> Arc<dyn Inbox> {
        self.inbox.clone()
    }

    /// The backend URL, redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend's health as the publisher and the subscriber see it: ready only if both
    /// are connected with their topology declared; last confirmed publish and last ack.
    pub async fn health(&self) -> Health {
        let publisher = self.publisher.health().await;
        publisher.and(self.subscriber.health().await)
    }
}

/// Connects to the backend named by `url` (see [`Config::url`]).
pub async fn connect(url: &str) -> Result<Longshore, ConnectError> {
    connect_with(&Config::new(url)).await
}

/// Connects with a full [`Config`].
pub async fn connect_with(config: &Config) -> Result<Longshore, ConnectError> {
    let mut handles = connect_broker(&config.url).await?;
    if let Some(store_url) = &config.store_url {
        let (store, outbox, inbox) = connect_store(store_url).await?;
        handles.store = Some(store);
        handles.outbox = outbox;
        if let Some(inbox) = inbox {
            handles.inbox = inbox;
        }
    }
    Ok(handles)
}

fn scheme(url: &str) -> Result<&str, ConnectError> {
    url.split_once("://")
        .map(|(s, _)| s)
        .ok_or_else(|| ConnectError::UnknownScheme {
            url: redact_url(url),
        })
}

fn memory() -> Longshore {
    let broker = MemoryBroker::default();
    let store = MemoryStore::with_outbox();
    Longshore {
        backend: "memory",
        publisher: observe_publisher(Arc::new(broker.publisher())),
        subscriber: observe_subscriber(Arc::new(broker.subscriber())),
        store: Some(Arc::new(store.clone())),
        outbox: Some(Arc::new(store)),
        inbox: Arc::new(MemoryInbox::default()),
        url: "memory://".to_string(),
    }
}

/// Handles for a broker without an event store of its own.
#[allow(dead_code)]
fn broker_only(
    backend: &'static str,
    url: &str,
    publisher: Arc<dyn Publisher>,
    subscriber: Arc<dyn Subscriber>,
) -> Longshore {
    Longshore {
        backend,
        publisher: observe_publisher(publisher),
        subscriber: observe_subscriber(subscriber),
        store: None,
        outbox: None,
        inbox: Arc::new(MemoryInbox::default()),
        url: redact_url(url),
    }
}

async fn connect_broker(url: &str) -> Result<Longshore, ConnectError> {
    let scheme = scheme(url)?.to_ascii_lowercase();
    match scheme.as_str() {
        "memory" => Ok(memory()),
        "amqp" | "amqps" => rabbitmq(url).await,
        "kafka" => kafka(url).await,
        "nats" | "tls" => nats(url).await,
        "postgres" | "postgresql" => postgres(url).await,
        _ => Err(ConnectError::UnknownScheme {
            url: redact_url(url),
        }),
    }
}

#[cfg(feature = "rabbitmq")]
async fn rabbitmq(url: &str) -> Result<Longshore, ConnectError> {
    let broker = longshore_rabbitmq::RabbitBroker::connect_url(url).await?;
    Ok(broker_only(
        "rabbitmq",
        url,
        Arc::new(broker.publisher()),
        Arc::new(broker.subscriber()),
    ))
}

#[cfg(not(feature = "rabbitmq"))]
async fn rabbitmq(url: &str) -> Result<Longshore, ConnectError> {
    disabled(scheme(url)?, "rabbitmq")
}

#[cfg(feature = "kafka")]
async fn kafka(url: &str) -> Result<Longshore, ConnectError> {
    let broker = longshore_kafka::KafkaBroker::connect_url(url).await?;
    Ok(broker_only(
        "kafka",
        url,
        Arc::new(broker.publisher()),
        Arc::new(broker.subscriber()),
    ))
}

#[cfg(not(feature = "kafka"))]
async fn kafka(url: &str) -> Result<Longshore, ConnectError> {
    disabled(scheme(url)?, "kafka")
}

#[cfg(feature = "nats")]
async fn nats(url: &str) -> Result<Longshore, ConnectError> {
    let broker = longshore_nats::NatsBroker::connect_url(url).await?;
    Ok(broker_only(
        "nats",
        url,
        Arc::new(broker.publisher()),
        Arc::new(broker.subscriber()),
    ))
}

#[cfg(not(feature = "nats"))]
async fn nats(url: &str) -> Result<Longshore, ConnectError> {
    disabled(scheme(url)?, "nats")
}

#[cfg(feature = "postgres")]
async fn postgres(url: &str) -> Result<Longshore, ConnectError> {
    let config = longshore_postgres::PgConfig::from_url(url)?;
    let broker = longshore_postgres::PgBroker::connect(config.clone()).await?;
    let store = longshore_postgres::PgStore::connect(config).await?;
    let mut handles = broker_only(
        "postgres",
        url,
        Arc::new(broker.publisher()),
        Arc::new(broker.subscriber()),
    );
    handles.inbox = Arc::new(store.inbox());
    handles.outbox = Some(Arc::new(store.clone()));
    handles.store = Some(Arc::new(store));
    Ok(handles)
}

#[cfg(not(feature = "postgres"))]
async fn postgres(url: &str) -> Result<Longshore, ConnectError> {
    disabled(scheme(url)?, "postgres")
}

type StoreHandles = (
    Arc<dyn EventStore>,
    Option<Arc<dyn Outbox>>,
    Option<Arc<dyn Inbox>>,
);

async fn connect_store(url: &str) -> Result<StoreHandles, ConnectError> {
    let scheme = scheme(url)?.to_ascii_lowercase();
    match scheme.as_str() {
        "memory" => {
            let store = MemoryStore::with_outbox();
            Ok((Arc::new(store.clone()), Some(Arc::new(store)), None))
        }
        "postgres" | "postgresql" => postgres_store(url).await,
        _ => Err(ConnectError::UnknownScheme {
            url: redact_url(url),
        }),
    }
}

#[cfg(feature = "postgres")]
async fn postgres_store(url: &str) -> Result<StoreHandles, ConnectError> {
    let config = longshore_postgres::PgConfig::from_url(url)?;
    let store = longshore_postgres::PgStore::connect(config).await?;
    Ok((
        Arc::new(store.clone()),
        Some(Arc::new(store.clone())),
        Some(Arc::new(store.inbox())),
    ))
}

#[cfg(not(feature = "postgres"))]
async fn postgres_store(url: &str) -> Result<StoreHandles, ConnectError> {
    disabled(scheme(url)?, "postgres")
}

#[allow(dead_code)]
fn disabled<T>(scheme: &str, feature: &'static str) -> Result<T, ConnectError> {
    Err(ConnectError::FeatureDisabled {
        scheme: scheme.to_string(),
        feature,
    })
}
