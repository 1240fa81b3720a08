//! Health and readiness of a backend connection.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// What a publisher or subscriber knows about its backend connection.
///
/// `detail` explains a problem in words and never holds credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// Backend name ("memory", "rabbitmq", "kafka", "nats", "postgres").
    pub backend: &'static str,
    /// The connection is up (or being used successfully).
    pub connected: bool,
    /// The topology longshore needs (exchange, stream, tables, topics) is declared.
    pub topology_declared: bool,
    /// When a publish was last confirmed, if ever.
    pub last_publish: Option<DateTime<Utc>>,
    /// When a delivery was last acknowledged, if ever.
    pub last_ack: Option<DateTime<Utc>>,
    /// What is wrong, when something is.
    pub detail: Option<String>,
}

impl Health {
    /// A connected backend with its topology declared and no activity yet.
    pub fn up(backend: &'static str) -> Self {
        Health {
            backend,
            connected: true,
            topology_declared: true,
            last_publish: None,
            last_ack: None,
            detail: None,
        }
    }

    /// A backend that is not connected, with the reason.
    pub fn down(backend: &'static str, detail: impl Into<String>) -> Self {
        Health {
            connected: false,
            topology_declared: false,
            detail: Some(detail.into()),
            ..Health::up(backend)
        }
    }

    /// Sets `topology_declared`.
    pub fn with_topology(mut self, declared: bool) -> Self {
        self.topology_declared = declared;
        self
    }

    /// Sets `detail`.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Ready to serve: connected with its topology declared. This is the readiness answer a
    /// service can expose (`/health` returning 200 or 503).
    pub fn is_ready(&self) -> bool {
        self.connected && self.topology_declared
    }

    /// Both views combined (a publisher's and a subscriber's on one backend): ready only if
    /// both are, latest activity of either.
    pub fn and(mut self, other: Health) -> Health {
        self.connected &= other.connected;
        self.topology_declared &= other.topology_declared;
        self.last_publish = self.last_publish.max(other.last_publish);
        self.last_ack = self.last_ack.max(other.last_ack);
        self.detail = match (self.detail.take(), other.detail) {
            (Some(a), Some(b)) if a != b => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        };
        self
    }
}

/// A timestamp updated from many tasks without a lock (0 = never).
#[derive(Debug, Default)]
pub(crate) struct LastSeen(AtomicI64);

impl LastSeen {
    pub(crate) fn touch(&self) {
        self.0
            .store(Utc::now().timestamp_micros(), Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<DateTime<Utc>> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            micros => DateTime::from_timestamp_micros(micros),
        }
    }
}
