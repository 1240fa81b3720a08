//! [`PgAcker`]: settles one leased row. Every statement only touches the row while the lease
//! is still this consumer's (`locked_by` and `attempts` match); a delivery dropped unsettled
//! is given back at once rather than after its lease.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use longshore_core::{
    dead_letter_message, dead_letter_topic, Acker, DeadLetter, Error, Message, Tracked,
};
use sqlx::Postgres;

use crate::error::{retry_lost, PgError};
use crate::lease::{lock, Fetcher};
use crate::mapping::headers_json;

/// Settles one delivery of a [`Fetcher`].
pub(crate) struct PgAcker {
    fetcher: Arc<Fetcher>,
    row: i64,
    attempts: i32,
    settled: bool,
}

impl PgAcker {
    pub(crate) fn new(fetcher: Arc<Fetcher>, row: i64, attempts: i32) -> Self {
        PgAcker {
            fetcher,
            row,
            attempts,
            settled: false,
        }
    }

    /// Releases the row for redelivery after `delay` (now when zero).
    async fn nack_row(
        fetcher: &Fetcher,
        row: i64,
        attempts: i32,
        delay: Duration,
    ) -> Result<(), Error> {
        let client = &fetcher.client;
        let now = delay.is_zero();
        retry_lost("nack", client.config.connect_timeout, |_| {
            sqlx::query::<Postgres>(client.sql.nack.clone())
                .bind(row)
                .bind(fetcher.id)
                .bind(attempts)
                .bind(delay)
                .bind(&client.channel)
                .bind(now)
                .execute(&client.pool)
        })
        .await
        .map_err(PgError::from)?;
        if !now {
            // Wake this process's consumers when the delay is over (others poll).
            let wake = client.hub.keyed(&fetcher.subscription);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                wake.notify_waiters();
            });
        }
        Ok(())
    }
}

impl Drop for PgAcker {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped unsettled: give the message back now rather than after the lease.
        let fetcher = self.fetcher.clone();
        let (row, attempts) = (self.row, self.attempts);
        lock(&fetcher.leased).remove(&row);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                // Counted until written, so closing waits for it rather than leaving the row
                // leased until its lease runs out.
                let tracked = fetcher.outstanding.track();
                handle.spawn(async move {
                    if let Err(e) = PgAcker::nack_row(&fetcher, row, attempts, Duration::ZERO).await {
                        tracing::warn!(error = %e, "returning an unsettled delivery failed; it comes back when its lease expires");
                    }
                    fetcher.released();
                    drop(tracked);
                });
            }
            Err(_) => fetcher.released(),
        }
    }
}

#[async_trait]
impl Acker for PgAcker {
    /// Queues the row's delete and returns: like an AMQP or JetStream ack, it is handed to the
    /// broker, not confirmed. A consumer's handlers then do not each wait a round trip for
    /// their ack (that wait bounded a drain at concurrency ÷ delete latency, ~13k msg/s).
    /// Until the delete commits the row stays leased by us (renewed) and holds its prefetch
    /// slot, so queued deletes are bounded by the prefetch; if it never commits, the message
    /// comes back after its lease. The broker's `close` waits for queued deletes.
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        self.settled = true;
        let queued = QueuedAck::new(self.fetcher.clone(), self.row);
        let attempts = self.attempts;
        let write = async move {
            let flusher = queued.fetcher.clone();
            let deleted = queued
                .fetcher
                .acks
                .submit((queued.row, attempts), move |rows| {
                    let fetcher = flusher.clone();
                    async move { delete_acked(&fetcher, rows).await }
                })
                .await;
            if let Err(e) = deleted {
                tracing::warn!(subscription = %queued.fetcher.subscription, error = %e, "ack not written; the message comes back when its lease expires");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(write)),
            // Polled outside a Tokio runtime: no task to hand the write to, so wait for it.
            Err(_) => write.await,
        }
        Ok(())
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        self.settled = true;
        let f = self.fetcher.clone();
        f.finish(self.row);
        PgAcker::nack_row(&f, self.row, self.attempts, delay.unwrap_or(Duration::ZERO)).await
    }

    /// Moves the row to the subscription `dlq.<name>` in one statement; if that fails the
    /// delivery stays unsettled and its drop gives the message back for another try.
    /// The broker keeps the message until it is settled: nothing to hold.
    fn hold(&mut self, _message: Message) {}

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let f = self.fetcher.clone();
        let dlq = dead_letter_topic(&f.subscription);
        let letter = dead_letter_message(message, topic, &f.subscription, &dead);
        let headers = headers_json(&letter.headers)?;
        let payload = letter.payload.to_vec();
        // Moving is one statement that deletes the leased row first: a retry after a
        // committed first one finds no row and inserts nothing.
        retry_lost("dead letter", f.client.config.connect_timeout, |_| {
            sqlx::query::<Postgres>(f.client.sql.dead_letter.clone())
                .bind(self.row)
                .bind(f.id)
                .bind(self.attempts)
                .bind(&dlq)
                .bind(&letter.id)
                .bind(&letter.key)
                .bind(&headers)
                .bind(&payload)
                .bind(&f.client.channel)
                .execute(&f.client.pool)
        })
        .await
        .map_err(PgError::from)?;
        // Moved (or the lease was lost and another consumer has it).
        self.settled = true;
        f.finish(self.row);
        Ok(())
    }
}

/// An ack whose delete is queued: counted in the client's outstanding work, and its row
/// leased and in flight, until it is dropped (after the delete, or with its task).
struct QueuedAck {
    fetcher: Arc<Fetcher>,
    row: i64,
    _tracked: Tracked,
}

impl QueuedAck {
    fn new(fetcher: Arc<Fetcher>, row: i64) -> Self {
        let _tracked = fetcher.outstanding.track();
        QueuedAck {
            fetcher,
            row,
            _tracked,
        }
    }
}

impl Drop for QueuedAck {
    fn drop(&mut self) {
        // Before `_tracked` (fields drop after this): closing sees the slot freed.
        self.fetcher.finish(self.row);
    }
}

/// Deletes the rows of acks that arrived together, each only while its lease is still this
/// consumer's; one outcome per ack.
async fn delete_acked(f: &Fetcher, rows: Vec<(i64, i32)>) -> Vec<Result<(), Error>> {
    let n = rows.len();
    let (ids, attempts): (Vec<i64>, Vec<i32>) = rows.into_iter().unzip();
    let result = retry_lost("ack", f.client.config.connect_timeout, |_| {
        sqlx::query::<Postgres>(f.client.sql.ack.clone())
            .bind(&ids)
            .bind(f.id)
            .bind(&attempts)
            .execute(&f.client.pool)
    })
    .await
    .map_err(PgError::from);
    match result {
        Ok(done) => {
            let late = n.saturating_sub(usize::try_from(done.rows_affected()).unwrap_or(n));
            if late > 0 {
                tracing::warn!(subscription = %f.subscription, late, "acks after the lease expired; those messages were redelivered");
            }
            (0..n).map(|_| Ok(())).collect()
        }
        Err(e) => {
            let e = Error::from(e);
            let mut out: Vec<Result<(), Error>> = (1..n).map(|_| Err(e.copy())).collect();
            out.push(Err(e));
            out
        }
    }
}
