//! [`Fetcher`]: one consumer's leases. It leases rows to itself for the visibility timeout;
//! its heartbeat renews the leases of the rows it holds, so a slow handler keeps its delivery
//! while a dead process loses it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longshore_core::{Error, Outstanding};
use tracing::Instrument;
use uuid::Uuid;

use crate::client::{ms, now_ms, Client};
use crate::error::SqliteError;
use crate::mapping::QueueRow;
use crate::queue_sql::{FETCH, HEARTBEAT};
use crate::wake::lock;
use crate::BACKEND;

/// State shared by one consumer's stream, its ackers and its lease heartbeat.
pub(crate) struct Fetcher {
    pub(crate) client: Arc<Client>,
    /// The subscriber handle's outstanding work (within the client's): give-backs, queued
    /// acks and fetches of this stream that closing the handle waits for.
    pub(crate) outstanding: Arc<Outstanding>,
    pub(crate) subscription: String,
    /// The lease holder's id (`locked_by`).
    pub(crate) id: String,
    pub(crate) prefetch: usize,
    /// Deliveries handed out (or buffered) and not settled.
    pub(crate) in_flight: AtomicUsize,
    /// Row ids whose lease the heartbeat renews.
    pub(crate) leased: Mutex<HashSet<i64>>,
    /// Woken when a delivery is settled (a prefetch slot freed up).
    pub(crate) settled: tokio::sync::Notify,
    pub(crate) stream_alive: AtomicBool,
}

impl Fetcher {
    pub(crate) fn new(
        client: Arc<Client>,
        outstanding: Arc<Outstanding>,
        subscription: &str,
        prefetch: usize,
    ) -> Self {
        Fetcher {
            outstanding,
            client,
            subscription: subscription.to_string(),
            id: Uuid::new_v4().to_string(),
            prefetch,
            in_flight: AtomicUsize::new(0),
            leased: Mutex::new(HashSet::new()),
            settled: tokio::sync::Notify::new(),
            stream_alive: AtomicBool::new(true),
        }
    }

    /// A delivery of `row` was settled (or given back): stop renewing it, free its slot.
    pub(crate) fn finish(&self, row: i64) {
        lock(&self.leased).remove(&row);
        self.released();
    }

    /// One in-flight slot is free again.
    pub(crate) fn released(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.settled.notify_waiters();
    }

    /// Leases up to `room` rows, in id order, and counts them in flight. Each returned row
    /// must become a delivery whose acker settles or gives it back.
    pub(crate) async fn fetch(&self, room: usize) -> Result<Vec<QueueRow>, Error> {
        let now = now_ms();
        let lease_end = now.saturating_add(ms(self.client.config().visibility_timeout));
        let rows = sqlx::query(FETCH)
            .bind(&self.subscription)
            .bind(i64::try_from(room).unwrap_or(i64::MAX))
            .bind(&self.id)
            .bind(lease_end)
            .bind(now)
            .fetch_all(&self.client.pools.writer)
            .instrument(tracing::debug_span!(
                "longshore.receive",
                backend = BACKEND,
                subscription = %self.subscription,
                room
            ))
            .await
            .map_err(SqliteError::from)?;
        let mut decoded = Vec::with_capacity(rows.len());
        for row in &rows {
            match QueueRow::decode(row) {
                Ok(d) => decoded.push(d),
                Err(e) => {
                    // Only when the id or attempts columns are not longshore's: the row cannot
                    // even be settled. Left to its lease, and reported.
                    tracing::warn!(error = %e, "queue row without a readable id or attempt count");
                }
            }
        }
        // RETURNING does not promise the order of the subquery.
        decoded.sort_by_key(|d| d.id);
        lock(&self.leased).extend(decoded.iter().map(|d| d.id));
        self.in_flight.fetch_add(decoded.len(), Ordering::AcqRel);
        Ok(decoded)
    }
}

/// Renews the leases of a consumer's unsettled deliveries until the stream is gone and
/// nothing is left in flight.
pub(crate) async fn heartbeat(fetcher: Arc<Fetcher>) {
    let lease = fetcher.client.config().visibility_timeout;
    let every = (lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let ids: Vec<i64> = lock(&fetcher.leased).iter().copied().collect();
        if ids.is_empty() {
            if !fetcher.stream_alive.load(Ordering::Acquire) || fetcher.client.is_closed() {
                return;
            }
            continue;
        }
        let ids = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
        if let Err(e) = sqlx::query(HEARTBEAT)
            .bind(ids)
            .bind(&fetcher.id)
            .bind(now_ms().saturating_add(ms(lease)))
            .execute(&fetcher.client.pools.writer)
            .await
        {
            tracing::warn!(subscription = %fetcher.subscription, error = %e, "renewing queue leases failed");
        }
    }
}
