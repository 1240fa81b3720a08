//! The outbox relay: moves outbox rows onto any [`Publisher`], marking them sent only after
//! the publisher confirmed them.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::observe::names;
use crate::outbox::{Outbox, OutboxMessage};
use crate::publisher::Publisher;
use crate::retry::RetryPolicy;
use crate::store::StoreError;

/// What one relay pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows confirmed by the publisher and marked sent.
    pub sent: usize,
}

/// Why a relay pass failed. Rows that were not confirmed were released for another try.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The outbox storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The publisher did not confirm some rows.
    #[error("publishing outbox rows failed after {sent} were sent: {source}")]
    Publish {
        /// Rows sent in this pass before the failure.
        sent: usize,
        /// The publisher's error.
        source: Error,
    },
}

/// How often a running relay counts its outbox backlog.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Relays one outbox to one publisher.
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn Publisher>,
    name: String,
    batch_size: usize,
    idle_wait: Duration,
    retry: RetryPolicy,
}

impl OutboxRelay {
    /// A relay named `name` (unique per running relay) with batches of 100 rows.
    pub fn new(
        name: impl Into<String>,
        outbox: Arc<dyn Outbox>,
        publisher: Arc<dyn Publisher>,
    ) -> Self {
        OutboxRelay {
            outbox,
            publisher,
            name: name.into(),
            batch_size: 100,
            idle_wait: Duration::from_millis(200),
            retry: RetryPolicy::exponential(u32::MAX, Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(10)),
        }
    }

    /// Rows claimed per pass.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// How long to wait when the outbox is empty.
    pub fn idle_wait(mut self, d: Duration) -> Self {
        self.idle_wait = d;
        self
    }

    /// One pass: claim, publish in order, mark the confirmed rows sent, release the rest.
    ///
    /// Consecutive rows with the same topic go out as one pipelined batch; batches go out one
    /// after another so rows keep their order. After a failed batch nothing later is sent in
    /// this pass, so one aggregate's events are never reordered by a partial failure.
    pub async fn run_once(&self) -> Result<RelayReport, RelayError> {
        let rows = self.outbox.claim(&self.name, self.batch_size).await?;
        let claimed = rows.len();
        let mut sent = 0;
        let mut rest = rows.as_slice();
        while let Some(first) = rest.first() {
            let run = rest.iter().take_while(|r| r.topic == first.topic).count();
            let (batch, tail) = rest.split_at(run);
            rest = tail;
            let messages = batch.iter().map(|r| r.message.clone()).collect();
            match self.publisher.publish_batch(&first.topic, messages).await {
                Ok(()) => {
                    let seqs: Vec<u64> = batch.iter().map(|r| r.seq).collect();
                    self.outbox.mark_sent(&self.name, &seqs).await?;
                    sent += seqs.len();
                    self.relayed().increment(seqs.len() as u64);
                }
                Err(e) => {
                    let failed: std::collections::HashSet<usize> =
                        e.failed.iter().map(|f| f.index).collect();
                    let ok: Vec<u64> = batch
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !failed.contains(i))
                        .map(|(_, r)| r.seq)
                        .collect();
                    self.outbox.mark_sent(&self.name, &ok).await?;
                    sent += ok.len();
                    self.relayed().increment(ok.len() as u64);
                    let unsent: Vec<u64> = batch
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| failed.contains(i))
                        .map(|(_, r)| r.seq)
                        .chain(rest.iter().map(|r: &OutboxMessage| r.seq))
                        .collect();
                    self.outbox.release(&self.name, &unsent).await?;
                    return Err(RelayError::Publish {
                        sent,
                        source: e.into(),
                    });
                }
            }
        }
        Ok(RelayReport { claimed, sent })
    }

    fn relayed(&self) -> metrics::Counter {
        metrics::counter!(names::OUTBOX_RELAYED, "relay" => self.name.clone())
    }

    /// Reads the outbox backlog into its gauge (a count query, so `run` does it every few
    /// seconds, not every pass).
    async fn record_backlog(&self) {
        match self.outbox.pending().await {
            Ok(n) => {
                metrics::gauge!(names::OUTBOX_BACKLOG, "relay" => self.name.clone()).set(n as f64)
            }
            Err(e) => {
                tracing::debug!(relay = %self.name, error = %e, "could not count the outbox backlog")
            }
        }
    }

    /// Runs passes until `stop` resolves: immediately again while rows keep coming, waiting
    /// `idle_wait` when the outbox is empty, backing off after failures. Returns rows sent.
    ///
    /// `stop` is only looked at between passes: a pass in flight is never cancelled, so rows
    /// that were published are always marked sent before `run` returns.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) -> u64 {
        use futures::FutureExt;
        tokio::pin!(stop);
        let mut total = 0u64;
        let mut failures = 0u32;
        let mut backlog_read: Option<std::time::Instant> = None;
        loop {
            if stop.as_mut().now_or_never().is_some() {
                return total;
            }
            if backlog_read.map_or(true, |at| at.elapsed() >= BACKLOG_EVERY) {
                self.record_backlog().await;
                backlog_read = Some(std::time::Instant::now());
            }
            let wait = match self.run_once().await {
                Ok(report) => {
                    failures = 0;
                    total += report.sent as u64;
                    if report.claimed == 0 {
                        self.idle_wait
                    } else {
                        Duration::ZERO
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if let RelayError::Publish { sent, .. } = &e {
                        total += *sent as u64;
                    }
                    tracing::warn!(relay = %self.name, error = %e, "outbox relay pass failed; backing off");
                    self.retry.backoff(failures)
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = &mut stop => return total,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}
