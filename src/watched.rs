//! What a [`Longshore`](crate::Longshore) watches for its health: the probes of the
//! consumers and relays it was given (shared by its clones).

use std::sync::{Arc, Mutex, MutexGuard};

use longshore_core::{ConsumerProbe, RelayProbe};

/// The consumers (with the names they were watched under) and relays of one connection.
#[derive(Default)]
pub(crate) struct Watched {
    pub(crate) consumers: Mutex<Vec<(String, ConsumerProbe)>>,
    pub(crate) relays: Mutex<Vec<RelayProbe>>,
}

/// A new, empty set, shared between a connection and its clones.
pub(crate) fn watched() -> Arc<Watched> {
    Arc::new(Watched::default())
}

/// Locks a list; a panic elsewhere while it was held leaves it usable (probes are read-only).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
