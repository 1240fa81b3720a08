//! [`SqliteAcker`]: settles one leased row. Every statement only touches the row while the
//! lease is still this consumer's (`locked_by` and `attempts` match); a delivery dropped
//! unsettled is given back at once rather than after its lease.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use longshore_core::{dead_letter_message, dead_letter_topic, Acker, DeadLetter, Error, Message};

use crate::client::{ms, now_ms};
use crate::error::SqliteError;
use crate::lease::Fetcher;
use crate::queue_sql::{route, ACK, NACK};
use crate::wake::lock;

/// Settles one delivery of a [`Fetcher`].
pub(crate) struct SqliteAcker {
    fetcher: Arc<Fetcher>,
    row: i64,
    attempts: i32,
    settled: bool,
}

impl SqliteAcker {
    pub(crate) fn new(fetcher: Arc<Fetcher>, row: i64, attempts: i32) -> Self {
        SqliteAcker {
            fetcher,
            row,
            attempts,
            settled: false,
        }
    }

    /// Releases the row for redelivery after `delay` (now when zero), and wakes this
    /// process's consumers then (others poll).
    async fn nack_row(
        fetcher: &Fetcher,
        row: i64,
        attempts: i32,
        delay: Duration,
    ) -> Result<(), Error> {
        let pools = &fetcher.client.pools;
        sqlx::query(NACK)
            .bind(row)
            .bind(&fetcher.id)
            .bind(attempts)
            .bind(now_ms().saturating_add(ms(delay)))
            .execute(&pools.writer)
            .await
            .map_err(SqliteError::from)?;
        let wake = pools.wake.keyed(&fetcher.subscription);
        if delay.is_zero() {
            wake.notify_waiters();
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                wake.notify_waiters();
            });
        }
        Ok(())
    }
}

impl Drop for SqliteAcker {
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
                    if let Err(e) = SqliteAcker::nack_row(&fetcher, row, attempts, Duration::ZERO).await {
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
impl Acker for SqliteAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        // Settled from here on, even if this future is dropped: the row stays leased by us
        // until the delete commits, and comes back after its lease if it never does.
        self.settled = true;
        let f = self.fetcher.clone();
        f.finish(self.row);
        let result = sqlx::query(ACK)
            .bind(self.row)
            .bind(&f.id)
            .bind(self.attempts)
            .execute(&f.client.pools.writer)
            .await
            .map_err(SqliteError::from)?;
        if result.rows_affected() == 0 {
            tracing::warn!(subscription = %f.subscription, "ack after the lease expired; the message was redelivered");
        }
        Ok(())
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        self.settled = true;
        let f = self.fetcher.clone();
        f.finish(self.row);
        SqliteAcker::nack_row(&f, self.row, self.attempts, delay.unwrap_or(Duration::ZERO)).await
    }

    /// Moves the row to the subscription `dlq.<name>` in one transaction; if that fails the
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
        let pools = &f.client.pools;
        let mut tx = pools
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(SqliteError::from)?;
        let deleted = sqlx::query(ACK)
            .bind(self.row)
            .bind(&f.id)
            .bind(self.attempts)
            .execute(&mut *tx)
            .await
            .map_err(SqliteError::from)?;
        // A lost lease (another consumer has the row now) moves nothing.
        let reached = if deleted.rows_affected() > 0 {
            route(&mut tx, &dlq, &[&letter]).await?
        } else {
            Vec::new()
        };
        tx.commit().await.map_err(SqliteError::from)?;
        pools.wake.subscriptions(&reached);
        self.settled = true;
        f.finish(self.row);
        Ok(())
    }
}
