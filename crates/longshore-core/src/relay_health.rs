//! What a running outbox relay reports: backlog, parked rows, and how long it has been
//! stalled. Shared by the relay's passes (which write it) and its handle (which reads it).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::observe::names;

/// One relay's health, as [`RelayHandle::health`](crate::RelayHandle::health) reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RelayHealth {
    /// The relay's name.
    pub name: String,
    /// The relay task is still running.
    pub running: bool,
    /// Rows waiting in the outbox, as last counted (every few seconds).
    pub backlog: u64,
    /// Rows parked after their publish failed for good, as last counted; listed by
    /// [`Outbox::failed`](crate::Outbox::failed), put back by
    /// [`Outbox::retry_failed`](crate::Outbox::retry_failed).
    pub parked: u64,
    /// Time since the relay last finished a pass (sent, parked, or found nothing to do):
    /// grows while the broker or the store keeps failing.
    #[serde(serialize_with = "seconds")]
    pub stalled_for: Duration,
    /// How long a stall may last before the relay is not ready.
    #[serde(serialize_with = "seconds")]
    pub stall_limit: Duration,
    /// The last pass's error, while the relay is failing.
    pub last_error: Option<String>,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl RelayHealth {
    /// Ready: running and not stalled for longer than its limit. Parked rows do not make a
    /// relay unready (they no longer hold anything back); they are counted in `parked` and in
    /// `longshore_outbox_parked_total`.
    pub fn is_ready(&self) -> bool {
        self.running && self.stalled_for < self.stall_limit
    }
}

struct Inner {
    last_pass: Instant,
    backlog: u64,
    parked: u64,
    last_error: Option<String>,
}

/// The state a relay's passes update and its handle reads.
pub(crate) struct RelayState {
    name: String,
    stall_limit: Duration,
    inner: Mutex<Inner>,
}

impl RelayState {
    pub(crate) fn new(name: String, stall_limit: Duration) -> Arc<Self> {
        Arc::new(RelayState {
            name,
            stall_limit,
            inner: Mutex::new(Inner {
                last_pass: Instant::now(),
                backlog: 0,
                parked: 0,
                last_error: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pass finished: the relay is moving.
    pub(crate) fn pass_finished(&self) {
        let mut s = self.lock();
        s.last_pass = Instant::now();
        s.last_error = None;
        drop(s);
        metrics::gauge!(names::OUTBOX_STALLED, "relay" => self.name.clone()).set(0.0);
    }

    /// A pass failed as a whole (broker or store down).
    pub(crate) fn pass_failed(&self, error: String) {
        let mut s = self.lock();
        s.last_error = Some(error);
        let stalled = s.last_pass.elapsed();
        drop(s);
        metrics::gauge!(names::OUTBOX_STALLED, "relay" => self.name.clone())
            .set(stalled.as_secs_f64());
    }

    /// The outbox was counted.
    pub(crate) fn counted(&self, backlog: u64, parked: u64) {
        let mut s = self.lock();
        s.backlog = backlog;
        s.parked = parked;
        drop(s);
        metrics::gauge!(names::OUTBOX_BACKLOG, "relay" => self.name.clone()).set(backlog as f64);
        metrics::gauge!(names::OUTBOX_PARKED_ROWS, "relay" => self.name.clone()).set(parked as f64);
    }

    pub(crate) fn snapshot(&self, running: bool) -> RelayHealth {
        let s = self.lock();
        RelayHealth {
            name: self.name.clone(),
            running,
            backlog: s.backlog,
            parked: s.parked,
            stalled_for: s.last_pass.elapsed(),
            stall_limit: self.stall_limit,
            last_error: s.last_error.clone(),
        }
    }
}
