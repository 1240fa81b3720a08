//! LISTEN/NOTIFY wake-ups. A notification is only a hint: every waiter also polls, so a lost
//! notification (listener reconnecting, server restart) costs latency, never a message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::{watch, Notify};

/// Fans one LISTEN connection's notifications out to in-process waiters, keyed by payload.
pub(crate) struct Hub {
    pool: PgPool,
    channel: String,
    state: Mutex<State>,
    /// Woken on every notification and after every (re)connect.
    all: Notify,
    shutdown: Notify,
    /// True once the first LISTEN succeeded.
    ready: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    started: bool,
    keyed: HashMap<String, Arc<Notify>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// A hub for `channel` that will open its own single connection with `options` when first
    /// needed.
    pub(crate) fn new(options: sqlx::postgres::PgConnectOptions, channel: String) -> Arc<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(options);
        let (ready, _) = watch::channel(false);
        Arc::new(Hub {
            pool,
            channel,
            state: Mutex::new(State::default()),
            all: Notify::new(),
            shutdown: Notify::new(),
            ready,
        })
    }

    /// The notifier woken by notifications whose payload is `key` (and by reconnects).
    pub(crate) fn keyed(&self, key: &str) -> Arc<Notify> {
        lock(&self.state)
            .keyed
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// The notifier woken by every notification.
    pub(crate) fn all(&self) -> &Notify {
        &self.all
    }

    /// Starts the listener task if needed and waits (briefly) until it listens, so that a
    /// caller that checks the database after this returns cannot miss a notification.
    pub(crate) async fn ensure_listening(self: &Arc<Self>) {
        let start = {
            let mut s = lock(&self.state);
            !std::mem::replace(&mut s.started, true)
        };
        if start {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(run(self.clone()));
            }
        }
        let mut ready = self.ready.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(2), ready.wait_for(|r| *r)).await;
    }

    /// Stops the listener task.
    pub(crate) fn stop(&self) {
        self.shutdown.notify_one();
    }

    /// Wakes every waiter (after a reconnect, or when the broker closes).
    pub(crate) fn wake_everyone(&self) {
        self.all.notify_waiters();
        for n in lock(&self.state).keyed.values() {
            n.notify_waiters();
        }
    }

    fn wake(&self, payload: &str) {
        self.all.notify_waiters();
        let n = lock(&self.state).keyed.get(payload).cloned();
        match n {
            Some(n) => n.notify_waiters(),
            None if payload.is_empty() => self.wake_everyone(),
            None => {}
        }
    }
}

async fn run(hub: Arc<Hub>) {
    let mut failures = 0u32;
    loop {
        let session = async {
            let mut listener = PgListener::connect_with(&hub.pool).await?;
            listener.ignore_pool_close_event(true);
            listener.listen(&hub.channel).await?;
            hub.ready.send_replace(true);
            // Anything may have happened while we were not listening.
            hub.wake_everyone();
            loop {
                match listener.try_recv().await? {
                    Some(n) => hub.wake(n.payload()),
                    None => {
                        // The connection dropped and was re-established (LISTEN re-issued
                        // by sqlx); notifications in between are lost.
                        hub.wake_everyone();
                    }
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = hub.shutdown.notified() => {
                hub.pool.close().await;
                return;
            }
            result = session => {
                if let Err(e) = result {
                    failures = failures.saturating_add(1);
                    tracing::debug!(channel = %hub.channel, error = %e, "LISTEN connection lost; reconnecting");
                }
            }
        }
        hub.wake_everyone();
        let backoff = Duration::from_millis(100u64.saturating_mul(1 << failures.min(5)));
        tokio::select! {
            _ = hub.shutdown.notified() => {
                hub.pool.close().await;
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}
