//! One health for everything a service opened through [`Longshore`]: the broker, the event
//! store, the consumers and outbox relays it watches. `/health` and `/ready` of
//! `Longshore::serve_health` (feature `health-server`) answer from it.

use std::time::Duration;

use longshore_core::{
    BreakerState, ConsumerHandle, Error, Health, OutboxRelay, RelayHandle, RelayHealth, RelayProbe,
};
use serde::Serialize;

use crate::connect::Longshore;
use crate::watched::lock;

/// How long the store may take to answer the health probe.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything a service opened, from [`Longshore::health`]; ready only if every part is.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ServiceHealth {
    /// Broker, store, every watched consumer and relay ready.
    pub ready: bool,
    /// The broker as the publisher and subscriber see it.
    pub broker: Health,
    /// The event store, when the connection has one.
    pub store: Option<StoreHealth>,
    /// Watched consumers ([`Longshore::watch_consumer`]); shut-down ones are left out.
    pub consumers: Vec<ConsumerStatus>,
    /// Watched relays ([`Longshore::spawn_relay`], [`Longshore::watch_relay`]); shut-down
    /// ones are left out.
    pub relays: Vec<RelayHealth>,
}

impl ServiceHealth {
    /// The readiness answer (`/ready` returns 200 or 503 by it).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// What is not ready, in words (empty when ready).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.broker.is_ready() {
            out.push(format!(
                "broker {}: {}",
                self.broker.backend,
                self.broker.detail.as_deref().unwrap_or("not ready")
            ));
        }
        if let Some(store) = self.store.as_ref().filter(|s| !s.reachable) {
            out.push(format!(
                "store: {}",
                store.detail.as_deref().unwrap_or("unreachable")
            ));
        }
        for c in self.consumers.iter().filter(|c| !c.ready) {
            out.push(format!(
                "consumer {}: {}",
                c.name,
                if c.running {
                    "circuit breaker open"
                } else {
                    "stopped by itself"
                }
            ));
        }
        for r in self.relays.iter().filter(|r| !r.is_ready()) {
            out.push(format!(
                "relay {}: {}",
                r.name,
                if r.running {
                    format!("stalled for {:.0?}", r.stalled_for)
                } else {
                    "stopped by itself".to_string()
                }
            ));
        }
        out
    }
}

/// The event store's answer to a cheap read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StoreHealth {
    /// The store answered within 2 s.
    pub reachable: bool,
    /// Why not, when not (no credentials: errors are redacted by the adapters).
    pub detail: Option<String>,
}

/// One watched consumer's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConsumerStatus {
    /// The name it was watched under.
    pub name: String,
    /// Still consuming.
    pub running: bool,
    /// Paused on purpose.
    pub paused: bool,
    /// The circuit breaker: `closed`, `half_open` or `open`.
    pub breaker: &'static str,
    /// Running and the breaker not open.
    pub ready: bool,
}

fn breaker_name(b: BreakerState) -> &'static str {
    match b {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half_open",
        BreakerState::Open => "open",
    }
}

impl Longshore {
    /// Adds a consumer to [`Longshore::health`]: not ready while its circuit breaker is open
    /// or once it stopped by itself; left out once shut down.
    pub fn watch_consumer(&self, name: impl Into<String>, consumer: &ConsumerHandle) {
        let mut consumers = lock(&self.watched.consumers);
        consumers.retain(|(_, p)| !p.is_shut_down());
        consumers.push((name.into(), consumer.probe()));
    }

    /// Adds a relay to [`Longshore::health`]: its backlog, parked rows and stall time; not
    /// ready once stalled past its limit or stopped by itself; left out once shut down.
    pub fn watch_relay(&self, relay: &RelayHandle) {
        let mut relays = lock(&self.watched.relays);
        relays.retain(|p| !p.is_shut_down());
        relays.push(relay.probe());
    }

    /// Starts an [`OutboxRelay`] named `name` from this connection's outbox to its publisher,
    /// watched by [`Longshore::health`]. A configuration error when the connection has no
    /// event store. Build the relay yourself and [`Longshore::watch_relay`] its handle for
    /// other settings.
    pub fn spawn_relay(&self, name: impl Into<String>) -> Result<RelayHandle, Error> {
        let outbox = self.stores_part().map(|s| s.outbox.clone()).ok_or_else(|| {
            Error::Config(format!(
                "{} has no event store and so no outbox: set {} (e.g. postgres://…) or use memory://",
                self.url(),
                crate::config::ENV_STORE_URL
            ))
        })?;
        let handle = OutboxRelay::new(name, outbox, self.publisher.clone()).spawn();
        self.watch_relay(&handle);
        Ok(handle)
    }

    /// The broker's health as the publisher and the subscriber see it: ready only if both
    /// are connected with their topology declared; last confirmed publish and last ack.
    pub async fn broker_health(&self) -> Health {
        let publisher = self.publisher.health().await;
        publisher.and(self.subscriber.health().await)
    }

    /// Everything this connection opened: the broker, the event store (a cheap read), and
    /// every consumer and relay it watches. Ready only if all are.
    pub async fn health(&self) -> ServiceHealth {
        let broker = self.broker_health().await;
        let store = match self.stores_part() {
            None => None,
            Some(s) => Some(
                match tokio::time::timeout(
                    STORE_PROBE_TIMEOUT,
                    s.store.load_checkpoint("longshore-health"),
                )
                .await
                {
                    Ok(Ok(_)) => StoreHealth {
                        reachable: true,
                        detail: None,
                    },
                    Ok(Err(e)) => StoreHealth {
                        reachable: false,
                        detail: Some(e.to_string()),
                    },
                    Err(_) => StoreHealth {
                        reachable: false,
                        detail: Some(format!("no answer within {STORE_PROBE_TIMEOUT:?}")),
                    },
                },
            ),
        };
        let consumers: Vec<ConsumerStatus> = {
            let mut watched = lock(&self.watched.consumers);
            watched.retain(|(_, p)| !p.is_shut_down());
            watched
                .iter()
                .map(|(name, p)| {
                    let h = p.health();
                    ConsumerStatus {
                        name: name.clone(),
                        running: h.running,
                        paused: h.paused,
                        breaker: breaker_name(h.breaker),
                        ready: h.is_ready(),
                    }
                })
                .collect()
        };
        let relays: Vec<RelayHealth> = {
            let mut watched = lock(&self.watched.relays);
            watched.retain(|p| !p.is_shut_down());
            watched.iter().map(RelayProbe::health).collect()
        };
        let ready = broker.is_ready()
            && store.as_ref().map_or(true, |s| s.reachable)
            && consumers.iter().all(|c| c.ready)
            && relays.iter().all(RelayHealth::is_ready);
        ServiceHealth {
            ready,
            broker,
            store,
            consumers,
            relays,
        }
    }
}
