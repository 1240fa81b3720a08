//! In-process wake-ups. SQLite has no LISTEN/NOTIFY: a write in this process wakes this
//! process's consumers and catch-up readers of the same file at once (through one registry
//! per process, keyed by the file's canonical path, so that two brokers on one file see each
//! other); rows written by other processes are found by polling every
//! [`crate::SqliteConfig::poll_interval`]. A wake-up is only a hint: every waiter polls too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use tokio::sync::Notify;

/// The notifiers of one database file in this process.
#[derive(Default)]
pub(crate) struct Wake {
    keyed: Mutex<HashMap<String, Arc<Notify>>>,
    /// Woken on every append to the event store.
    events: Notify,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Wake>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Weak<Wake>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

impl Wake {
    /// The process's notifiers for the file at `path` (shared by every handle on it).
    pub(crate) fn of(path: &Path) -> Arc<Wake> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut map = lock(registry());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(wake) = map.get(&key).and_then(Weak::upgrade) {
            return wake;
        }
        let wake = Arc::new(Wake::default());
        map.insert(key, Arc::downgrade(&wake));
        wake
    }

    /// The notifier of subscription `name`.
    pub(crate) fn keyed(&self, name: &str) -> Arc<Notify> {
        lock(&self.keyed)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Wakes the consumers of each of `names`.
    pub(crate) fn subscriptions<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        let keyed = lock(&self.keyed);
        for name in names {
            if let Some(n) = keyed.get(name) {
                n.notify_waiters();
            }
        }
    }

    /// Wakes every consumer (when a broker closes, its streams end).
    pub(crate) fn everyone(&self) {
        for n in lock(&self.keyed).values() {
            n.notify_waiters();
        }
        self.events.notify_waiters();
    }

    /// The notifier woken by appends.
    pub(crate) fn events(&self) -> &Notify {
        &self.events
    }
}
