//! [`Fetcher`]: one consumer's leases. It fetches rows with `FOR UPDATE SKIP LOCKED` and
//! leases them to itself for the visibility timeout; its heartbeat renews the leases of the
//! rows it holds, so a slow handler keeps its delivery while a dead process loses it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use longshore_core::{Error, GroupCommit, Outstanding};
use sqlx::Postgres;
use tracing::Instrument;
use uuid::Uuid;

use crate::client::Client;
use crate::error::{retry_lost, PgError};
use crate::mapping::QueueRow;
use crate::BACKEND;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by one consumer's stream, its ackers and its lease heartbeat.
pub(crate) struct Fetcher {
    pub(crate) client: Arc<Client>,
    /// The subscriber handle's outstanding work (within the client's): give-backs, queued
    /// acks and fetches of this stream that closing the handle waits for.
    pub(crate) outstanding: Arc<Outstanding>,
    pub(crate) subscription: String,
    /// The lease holder's id (`locked_by`).
    pub(crate) id: Uuid,
    pub(crate) prefetch: usize,
    /// Deliveries handed out (or buffered) and not settled.
    pub(crate) in_flight: AtomicUsize,
    /// Row ids whose lease the heartbeat renews.
    pub(crate) leased: Mutex<HashSet<i64>>,
    /// Woken when a delivery is settled (a prefetch slot freed up).
    pub(crate) settled: tokio::sync::Notify,
    pub(crate) stream_alive: AtomicBool,
    /// Concurrent acks of this consumer's deliveries, deleted together: a commit per ack
    /// bounded the drain at one WAL flush per message.
    pub(crate) acks: GroupCommit<(i64, i32)>,
}

/// Most acks one delete carries.
const ACK_MAX_ROWS: usize = 1_000;

impl Fetcher {
    pub(crate) fn new(
        client: Arc<Client>,
        outstanding: Arc<Outstanding>,
        subscription: &str,
        prefetch: usize,
    ) -> Self {
        Fetcher {
            outstanding,
            subscription: subscription.to_string(),
            id: Uuid::new_v4(),
            prefetch,
            in_flight: AtomicUsize::new(0),
            leased: Mutex::new(HashSet::new()),
            settled: tokio::sync::Notify::new(),
            stream_alive: AtomicBool::new(true),
            // A quarter of the pool: fetches, the heartbeat and publishers need the rest.
            acks: GroupCommit::new(
                BACKEND,
                (client.config.max_connections as usize / 4).max(1),
                ACK_MAX_ROWS,
            ),
            client,
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
        // A retry after a lost connection is safe: rows an earlier try leased (if it
        // committed) come back when their lease runs out.
        let rows = retry_lost("fetch", self.client.config.connect_timeout, |_| {
            sqlx::query::<Postgres>(self.client.sql.fetch.clone())
                .bind(&self.subscription)
                .bind(i64::try_from(room).unwrap_or(i64::MAX))
                .bind(self.id)
                .bind(self.client.config.visibility_timeout)
                .fetch_all(&self.client.pool)
        })
        .instrument(tracing::debug_span!(
            "longshore.receive",
            backend = BACKEND,
            subscription = %self.subscription,
            room
        ))
        .await
        .map_err(PgError::from)?;
        let mut decoded = Vec::with_capacity(rows.len());
        for row in &rows {
            match QueueRow::decode(row) {
                Ok(d) => decoded.push(d),
                Err(e) => {
                    // Only when the table's id or attempts columns are not longshore's: the row
                    // cannot even be settled. Left to its lease, and reported.
                    tracing::warn!(error = %e, "queue row without a readable id or attempt count");
                }
            }
        }
        // UPDATE ... RETURNING does not keep the order of its source.
        decoded.sort_by_key(|d| d.id);
        lock(&self.leased).extend(decoded.iter().map(|d| d.id));
        self.in_flight.fetch_add(decoded.len(), Ordering::AcqRel);
        Ok(decoded)
    }
}

/// Renews the leases of a consumer's unsettled deliveries until the stream is gone and
/// nothing is left in flight.
pub(crate) async fn heartbeat(fetcher: Arc<Fetcher>) {
    let lease = fetcher.client.config.visibility_timeout;
    let every = (lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let ids: Vec<i64> = lock(&fetcher.leased).iter().copied().collect();
        if ids.is_empty() {
            if !fetcher.stream_alive.load(Ordering::Acquire) {
                return;
            }
            continue;
        }
        if let Err(e) = sqlx::query::<Postgres>(fetcher.client.sql.heartbeat.clone())
            .bind(ids)
            .bind(fetcher.id)
            .bind(lease)
            .execute(&fetcher.client.pool)
            .await
        {
            tracing::warn!(subscription = %fetcher.subscription, error = %e, "renewing queue leases failed");
        }
    }
}
