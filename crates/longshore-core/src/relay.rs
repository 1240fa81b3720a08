//! The outbox relay: moves outbox rows onto any [`Publisher`], marking them sent only after
//! the publisher confirmed them, parking rows the broker refuses for good so they never hold
//! back the rows behind them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::codec::{Codec, JsonCodec};
use crate::error::Error;
use crate::event::Event;
use crate::observe::names;
use crate::outbox::{Outbox, OutboxMessage};
use crate::publisher::Publisher;
use crate::relay_health::{RelayHealth, RelayState};
use crate::retry::RetryPolicy;
use crate::store::StoreError;

/// What one relay pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayReport {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows confirmed by the publisher and marked sent.
    pub sent: usize,
    /// Rows refused for good by the publisher in this pass (each attempt counted).
    pub refused: usize,
    /// Rows parked in this pass (refused `max_attempts` times).
    pub parked: usize,
}

/// Why a relay pass failed. Rows that were not confirmed were released for another try.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The outbox storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The publisher did not confirm some rows, for a reason that may pass (connection,
    /// timeout, backpressure) or that concerns every row (closed, unauthorized).
    #[error("publishing outbox rows failed after {sent} were sent: {source}")]
    Publish {
        /// Rows sent in this pass before the failure.
        sent: usize,
        /// The publisher's error.
        source: Error,
    },
}

/// Where a relay sends an outbox event: `Some(topic)`, or `None` to drop it (an internal
/// event that must not leave the service). See [`OutboxRelay::topics`].
pub type TopicMapper = Arc<dyn Fn(&Event) -> Option<String> + Send + Sync>;

/// How often a running relay counts its outbox backlog.
const BACKLOG_EVERY: Duration = Duration::from_secs(5);

/// Whether `e` is about this one message (park it after a few tries) rather than about the
/// connection or the whole relay (back off and try everything again later). Closed,
/// unauthorized and misconfigured publishers refuse every row alike: parking would empty the
/// outbox into the parked list.
fn refuses_this_row(e: &Error) -> bool {
    !e.is_retryable()
        && !matches!(
            e,
            Error::Closed(_)
                | Error::Unauthorized { .. }
                | Error::Config(_)
                | Error::Unsupported { .. }
                | Error::Connection { .. }
        )
}

/// Relays one outbox to one publisher.
///
/// Rows are published in sequence order, consecutive rows with the same topic as one
/// pipelined batch. A row refused for good (unroutable, rejected, too large) is tried again on
/// the next passes and parked after [`OutboxRelay::max_attempts`] refusals; until then the later
/// rows of its aggregate (message key) wait, rows of other aggregates go on. A failure that may
/// pass (connection, timeout) ends the pass and the relay backs off, so no row overtakes an
/// earlier row of its aggregate.
pub struct OutboxRelay {
    outbox: Arc<dyn Outbox>,
    publisher: Arc<dyn Publisher>,
    name: String,
    batch_size: usize,
    idle_wait: Duration,
    retry: RetryPolicy,
    max_attempts: u32,
    stall_limit: Duration,
    state: Arc<RelayState>,
    topics: Option<TopicMapper>,
}

impl OutboxRelay {
    /// A relay named `name` (unique per running relay) with batches of 100 rows, parking a
    /// row after 3 refusals, not ready after a 60 s stall.
    pub fn new(
        name: impl Into<String>,
        outbox: Arc<dyn Outbox>,
        publisher: Arc<dyn Publisher>,
    ) -> Self {
        let name = name.into();
        let stall_limit = Duration::from_secs(60);
        OutboxRelay {
            outbox,
            publisher,
            state: RelayState::new(name.clone(), stall_limit),
            name,
            batch_size: 100,
            idle_wait: Duration::from_millis(200),
            retry: RetryPolicy::exponential(u32::MAX, Duration::from_millis(200))
                .with_max_backoff(Duration::from_secs(10)),
            max_attempts: 3,
            stall_limit,
            topics: None,
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

    /// How many times the publisher may refuse a row for good before it is parked (at least
    /// 1; default 3).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// How long the relay may go without finishing a pass before its health says not ready
    /// (default 60 s).
    pub fn stall_limit(mut self, d: Duration) -> Self {
        self.stall_limit = d;
        self.state = RelayState::new(self.name.clone(), d);
        self
    }

    /// Routes each outbox event by `mapper`: `Some(topic)` publishes it there, `None` drops it
    /// (marked sent, never published: internal events stay inside the service). Without a
    /// mapper every event goes to the topic its row names, `events.<event_type>`. The store
    /// still writes one row per event; the relay decides where it goes. A row whose message
    /// is not a longshore event keeps its stored topic.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use longshore_core::{memory::{MemoryBroker, MemoryStore}, Broker, OutboxRelay};
    /// let relay = OutboxRelay::new("orders", Arc::new(MemoryStore::with_outbox()), MemoryBroker::default().publisher())
    ///     .topics(|e| match e.event_type.as_str() {
    ///         "order_audited" => None,                          // internal
    ///         t => Some(format!("shop.orders.{t}")),
    ///     });
    /// ```
    pub fn topics(
        mut self,
        mapper: impl Fn(&Event) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.topics = Some(Arc::new(mapper));
        self
    }

    /// The relay's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The outbox it relays (to list or retry parked rows).
    pub fn outbox(&self) -> &Arc<dyn Outbox> {
        &self.outbox
    }

    /// One pass: claim, publish in order, mark the confirmed rows sent, count refusals (parking
    /// rows refused `max_attempts` times), release the rest.
    ///
    /// After a failure that may pass, nothing later is sent in this pass, so one aggregate's
    /// events are never reordered by a transient failure.
    pub async fn run_once(&self) -> Result<RelayReport, RelayError> {
        let rows = self.outbox.claim(&self.name, self.batch_size).await?;
        let mut report = RelayReport {
            claimed: rows.len(),
            ..RelayReport::default()
        };
        let rows = self.route(rows).await?;
        // Aggregates with a refused row in this pass: their later rows wait for the next pass.
        let mut held: HashSet<String> = HashSet::new();
        let mut rest = rows.as_slice();
        while !rest.is_empty() {
            let waits =
                |r: &OutboxMessage| r.message.key.as_ref().is_some_and(|k| held.contains(k));
            let skipped: Vec<u64> = rest
                .iter()
                .take_while(|r| waits(r))
                .map(|r| r.seq)
                .collect();
            if !skipped.is_empty() {
                self.outbox.release(&self.name, &skipped).await?;
                rest = &rest[skipped.len()..];
                continue;
            }
            let Some(first) = rest.first() else { break };
            let run = rest
                .iter()
                .take_while(|r| r.topic == first.topic && !waits(r))
                .count();
            let (batch, tail) = rest.split_at(run);
            rest = tail;
            let messages = batch.iter().map(|r| r.message.clone()).collect();
            let failures = match self.publisher.publish_batch(&first.topic, messages).await {
                Ok(()) => Vec::new(),
                Err(e) => e.failed,
            };
            let failed: HashSet<usize> = failures.iter().map(|f| f.index).collect();
            let ok: Vec<u64> = batch
                .iter()
                .enumerate()
                .filter(|(i, _)| !failed.contains(i))
                .map(|(_, r)| r.seq)
                .collect();
            self.outbox.mark_sent(&self.name, &ok).await?;
            report.sent += ok.len();
            self.relayed().increment(ok.len() as u64);
            if let Some(stop) = failures.iter().find(|f| !refuses_this_row(&f.error)) {
                // The connection or the whole publisher failed: give back this batch's failed
                // rows and everything after it, and back off.
                let unsent: Vec<u64> = failures
                    .iter()
                    .map(|f| batch[f.index].seq)
                    .chain(rest.iter().map(|r| r.seq))
                    .collect();
                self.outbox.release(&self.name, &unsent).await?;
                return Err(RelayError::Publish {
                    sent: report.sent,
                    source: stop.error.copy(),
                });
            }
            for f in &failures {
                let row = &batch[f.index];
                report.refused += 1;
                let error = f.error.to_string();
                let parked = self
                    .outbox
                    .record_failure(&self.name, row.seq, &error, self.max_attempts)
                    .await?;
                if parked {
                    report.parked += 1;
                    metrics::counter!(names::OUTBOX_PARKED, "relay" => self.name.clone())
                        .increment(1);
                    tracing::warn!(
                        relay = %self.name, seq = row.seq, topic = %row.topic,
                        message_id = %row.message.id, error = %error,
                        "outbox row parked after {} refused publishes; later rows go on \
                         (list with Outbox::failed, retry with Outbox::retry_failed)",
                        self.max_attempts
                    );
                } else if let Some(key) = &row.message.key {
                    held.insert(key.clone());
                }
            }
        }
        Ok(report)
    }

    /// Applies the topic mapper: rows it drops are marked sent here, the rest get their topic.
    async fn route(&self, rows: Vec<OutboxMessage>) -> Result<Vec<OutboxMessage>, RelayError> {
        let Some(mapper) = &self.topics else {
            return Ok(rows);
        };
        let mut kept = Vec::with_capacity(rows.len());
        let mut dropped = Vec::new();
        for mut row in rows {
            // Not an event longshore wrote (another writer's row): its stored topic stands.
            let Ok(event) = JsonCodec.decode(&row.message) else {
                kept.push(row);
                continue;
            };
            match mapper(&event) {
                Some(topic) => {
                    row.topic = topic;
                    kept.push(row);
                }
                None => dropped.push(row.seq),
            }
        }
        self.outbox.mark_sent(&self.name, &dropped).await?;
        Ok(kept)
    }

    fn relayed(&self) -> metrics::Counter {
        metrics::counter!(names::OUTBOX_RELAYED, "relay" => self.name.clone())
    }

    /// Counts the outbox backlog and parked rows into the gauges and the health (count
    /// queries, so `run` does it every few seconds, not every pass).
    async fn count(&self) {
        let counted = async {
            Ok::<_, StoreError>((
                self.outbox.pending().await?,
                self.outbox.failed_count().await?,
            ))
        };
        match counted.await {
            Ok((backlog, parked)) => self.state.counted(backlog, parked),
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
        let mut counted_at: Option<Instant> = None;
        loop {
            if stop.as_mut().now_or_never().is_some() {
                return total;
            }
            if counted_at.map_or(true, |at| at.elapsed() >= BACKLOG_EVERY) {
                self.count().await;
                counted_at = Some(Instant::now());
            }
            let wait = match self.run_once().await {
                Ok(report) => {
                    failures = 0;
                    total += report.sent as u64;
                    self.state.pass_finished();
                    if report.parked > 0 {
                        // Show the parked row in the health without waiting for the next count.
                        counted_at = None;
                    }
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
                    self.state.pass_failed(e.to_string());
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

    /// Runs the relay on a tokio task until [`RelayHandle::shutdown`] (or the handle is
    /// dropped), and returns its handle.
    pub fn spawn(self) -> RelayHandle {
        let (stop, mut stopped) = watch::channel(false);
        let state = self.state.clone();
        let outbox = self.outbox.clone();
        let task = tokio::spawn(async move {
            self.run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        });
        RelayHandle {
            stop,
            task: Some(task),
            state,
            outbox,
        }
    }
}

/// A running relay, from [`OutboxRelay::spawn`]. Dropping the handle stops the relay after
/// its pass in flight, as [`RelayHandle::shutdown`] does without waiting.
pub struct RelayHandle {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<u64>>,
    state: Arc<RelayState>,
    outbox: Arc<dyn Outbox>,
}

impl RelayHandle {
    /// Backlog, parked rows, stall time; ready unless stopped or stalled past its limit.
    pub fn health(&self) -> RelayHealth {
        self.state.snapshot(!self.is_finished())
    }

    /// A cloneable view of this relay's health, for a health endpoint that does not own the
    /// handle.
    pub fn probe(&self) -> RelayProbe {
        RelayProbe {
            state: self.state.clone(),
            stopped: self.stop.subscribe(),
            task: self.task.as_ref().map(|t| t.abort_handle()),
        }
    }

    /// The outbox it relays: [`Outbox::failed`] lists parked rows, [`Outbox::retry_failed`]
    /// puts them back.
    pub fn outbox(&self) -> &Arc<dyn Outbox> {
        &self.outbox
    }

    /// Whether the relay task ended (stopped, or panicked).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().map_or(true, |t| t.is_finished())
    }

    /// Stops the relay after its pass in flight (rows it published are marked sent) and
    /// returns the rows it sent. If that pass takes longer than `deadline`, the task is
    /// abandoned: rows it published but had not marked are published again by the next relay
    /// (at-least-once).
    pub async fn shutdown(mut self, deadline: Duration) -> u64 {
        self.stop.send_replace(true);
        let Some(mut task) = self.task.take() else {
            return 0;
        };
        match tokio::time::timeout(deadline, &mut task).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(e)) => {
                tracing::warn!(relay = %self.state.snapshot(false).name, error = %e, "outbox relay task failed");
                0
            }
            Err(_) => {
                task.abort();
                0
            }
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// A cloneable view of a running relay's health (see [`RelayHandle::probe`]).
#[derive(Clone)]
pub struct RelayProbe {
    state: Arc<RelayState>,
    stopped: watch::Receiver<bool>,
    // Only read (`is_finished`); the probe never aborts the relay.
    task: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for RelayProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayProbe").finish_non_exhaustive()
    }
}

impl RelayProbe {
    /// Whether the relay was shut down on purpose (its handle shut down or dropped).
    pub fn is_shut_down(&self) -> bool {
        *self.stopped.borrow()
    }

    /// The relay's health now; not running once its handle was shut down or dropped.
    pub fn health(&self) -> RelayHealth {
        let running =
            !*self.stopped.borrow() && self.task.as_ref().is_some_and(|t| !t.is_finished());
        self.state.snapshot(running)
    }
}
