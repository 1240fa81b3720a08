//! Settling a job: ack, requeue or dead-letter its delivery, count it, and release its key so
//! the next message of that key may run. Shared by the workers and the batch runners.

use std::sync::Arc;
use std::time::Duration;

use super::flow::{Attempt, Flow};
use super::lanes::{Job, Lanes};
use super::stats::Counters;
use super::worker::ExpiredPolicy;
use crate::capabilities::Capabilities;
use crate::error::Error;
use crate::inbox::Inbox;
use crate::observe::names;
use crate::retry::RetryPolicy;

/// What one consumer's workers and batch runners share.
pub(crate) struct Settler {
    pub backend: &'static str,
    /// Shared with every handler's context, so no copy of the name is made per message.
    pub subscription: Arc<str>,
    pub retry: RetryPolicy,
    pub inbox: Option<Arc<dyn Inbox>>,
    pub counters: Arc<Counters>,
    pub lanes: Arc<Lanes>,
    pub flow: Arc<Flow>,
    /// The backend holds a delayed `nack` itself (durably), so long waits go to it.
    pub native_delay: bool,
    metrics: SettleMetrics,
}

/// The runtime's metric handles, registered once per consumer.
struct SettleMetrics {
    retried: metrics::Counter,
    handled_ok: metrics::Histogram,
    handled_retry: metrics::Histogram,
    handled_dead: metrics::Histogram,
    deferred: metrics::Counter,
    expired: metrics::Counter,
}

/// How a handler attempt ended, for the duration histogram and the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    Retry,
    DeadLetter { transient: bool },
}

impl Settler {
    pub fn new(
        capabilities: &Capabilities,
        subscription: String,
        retry: RetryPolicy,
        inbox: Option<Arc<dyn Inbox>>,
        counters: Arc<Counters>,
        lanes: Arc<Lanes>,
        flow: Arc<Flow>,
    ) -> Self {
        let backend = capabilities.backend;
        let labels = |outcome: &'static str| {
            [
                ("backend", backend.to_string()),
                ("subscription", subscription.clone()),
                ("outcome", outcome.to_string()),
            ]
        };
        let metrics = SettleMetrics {
            retried: metrics::counter!(
                names::RETRIED,
                "backend" => backend,
                "subscription" => subscription.clone()
            ),
            handled_ok: metrics::histogram!(names::HANDLER_DURATION, &labels("ok")),
            handled_retry: metrics::histogram!(names::HANDLER_DURATION, &labels("retry")),
            handled_dead: metrics::histogram!(names::HANDLER_DURATION, &labels("dead_letter")),
            deferred: metrics::counter!(
                names::DEFERRED,
                "backend" => backend,
                "subscription" => subscription.clone()
            ),
            expired: metrics::counter!(
                names::EXPIRED,
                "backend" => backend,
                "subscription" => subscription.clone()
            ),
        };
        Settler {
            backend,
            subscription: subscription.into(),
            retry,
            inbox,
            counters,
            lanes,
            flow,
            native_delay: capabilities.native_delay,
            metrics,
        }
    }

    /// Records one handler attempt: its duration, retries, and what the breaker learns.
    pub fn attempted(&self, verdict: Verdict, took: Duration) {
        match verdict {
            Verdict::Ok => {
                self.metrics.handled_ok.record(took);
                self.flow.attempt(Attempt::Succeeded);
            }
            Verdict::Retry => {
                Counters::inc(&self.counters.retried);
                self.metrics.handled_retry.record(took);
                self.metrics.retried.increment(1);
                self.flow.attempt(Attempt::FailedTransiently);
            }
            Verdict::DeadLetter { transient } => {
                self.metrics.handled_dead.record(took);
                if transient {
                    self.flow.attempt(Attempt::FailedTransiently);
                }
            }
        }
    }

    /// Whether the inbox has seen this job's message: `Some(true)` acks it as a duplicate,
    /// `None` (inbox unavailable) gives it back, since a duplicate cannot be told.
    pub async fn seen_before(&self, message_id: &str) -> Option<bool> {
        let Some(inbox) = &self.inbox else {
            return Some(false);
        };
        match inbox.is_processed(&self.subscription, message_id).await {
            Ok(seen) => Some(seen),
            Err(e) => {
                tracing::warn!(error = %e, "inbox unavailable; message will be redelivered");
                None
            }
        }
    }

    /// Acks a job whose handler succeeded, recording it in the inbox first.
    pub async fn handled(&self, job: Job) {
        if let Some(inbox) = &self.inbox {
            let id: &str = &job.delivery.message().id;
            if let Err(e) = inbox.mark_processed(&self.subscription, id).await {
                tracing::warn!(error = %e, "could not record message in inbox; it may be handled again");
            }
        }
        self.ack(job).await;
    }

    pub async fn ack(&self, job: Job) {
        let Job {
            delivery,
            key,
            permit,
        } = job;
        match delivery.ack().await {
            Ok(()) => Counters::inc(&self.counters.acked),
            Err(e) => self.settle_failed("ack", e),
        }
        self.done(key, permit);
    }

    /// Gives the job back for redelivery (shutdown, an unavailable inbox).
    pub async fn requeue(&self, job: Job) {
        if self.give_back(job, None).await {
            Counters::inc(&self.counters.requeued);
        }
    }

    /// Whether a retry after `delay` goes to the broker rather than a sleep in process.
    pub fn hands_over(&self, delay: Duration) -> bool {
        self.native_delay && delay >= self.retry.durable_after
    }

    /// A scheduled message that arrived early: back to the broker for the time left.
    pub async fn defer(&self, job: Job, left: Duration) {
        if self.give_back(job, Some(left)).await {
            Counters::inc(&self.counters.deferred);
            self.metrics.deferred.increment(1);
        }
    }

    /// A failed attempt whose backoff the broker waits out (see [`Settler::hands_over`]); the
    /// broker's redelivery count carries the attempt number on.
    pub async fn retry_later(&self, job: Job, delay: Duration) {
        tracing::debug!(?delay, "retry handed to the broker");
        self.give_back(job, Some(delay)).await;
    }

    /// Nacks the job's delivery (after `delay`, if any) and frees its key and slot; `true`
    /// when the broker took it back.
    async fn give_back(&self, job: Job, delay: Option<Duration>) -> bool {
        let Job {
            delivery,
            key,
            permit,
        } = job;
        let taken = match delivery.nack(delay).await {
            Ok(()) => true,
            Err(e) => {
                self.settle_failed("nack", e);
                false
            }
        };
        self.done(key, permit);
        taken
    }

    /// A message past its expiry: counted, then dropped or dead-lettered as configured.
    pub async fn expired(&self, job: Job, policy: ExpiredPolicy) {
        Counters::inc(&self.counters.expired);
        self.metrics.expired.increment(1);
        match policy {
            ExpiredPolicy::Drop => {
                tracing::debug!("dropping expired message");
                self.ack(job).await
            }
            ExpiredPolicy::DeadLetter => {
                let attempts = job.delivery.attempt;
                self.dead_letter(job, "expired".to_string(), attempts).await
            }
        }
    }

    pub async fn dead_letter(&self, job: Job, reason: String, attempts: u32) {
        tracing::warn!(%reason, attempts, "dead-lettering message");
        let Job {
            delivery,
            key,
            permit,
        } = job;
        match delivery.dead_letter_after(reason, attempts).await {
            Ok(()) => Counters::inc(&self.counters.dead_lettered),
            Err(e) => self.settle_failed("dead-letter", e),
        }
        self.done(key, permit);
    }

    /// After settling: the key's next message may run, the in-flight slot is free.
    fn done(&self, key: Option<u64>, permit: tokio::sync::OwnedSemaphorePermit) {
        self.lanes.release(key);
        drop(permit);
        self.flow.settled();
    }

    fn settle_failed(&self, what: &str, e: Error) {
        Counters::inc(&self.counters.settle_errors);
        tracing::warn!(error = %e, "{what} failed; the broker will redeliver the message");
    }
}
