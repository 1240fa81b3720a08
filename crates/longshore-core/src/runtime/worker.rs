//! The worker pool: a fixed number of workers take ready jobs from the lanes, decode each,
//! find its handler by event type, run it inside the message's trace with in-process retries,
//! or hand it to its batch runner.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use super::batch::{BatchRoute, Refused};
use super::handler::{ErasedHandler, HandlerContext, HandlerError};
use super::lanes::Job;
use super::settle::{Settler, Verdict};
use super::stats::Counters;
use super::stopped;
use crate::codec::Codec;
use crate::event::Event;
use crate::observe::{attach, TraceContext};
use crate::schedule::{timing_now, Timing};

/// What to do with a message whose `event_type` has no handler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnknownEventPolicy {
    /// Dead-letter it (the default): nothing is silently ignored.
    #[default]
    DeadLetter,
    /// Acknowledge and drop it: for subscriptions that deliberately see more types than they
    /// handle.
    Ack,
}

/// What to do with a message past its expiry ([`HEADER_EXPIRES_AT`](crate::HEADER_EXPIRES_AT)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpiredPolicy {
    /// Acknowledge and drop it (the default): it was only worth handling in time.
    #[default]
    Drop,
    /// Dead-letter it with reason `expired`, for a later look or replay.
    DeadLetter,
}

/// Where events of one type go.
pub(crate) enum Route {
    One(ErasedHandler),
    Batch(Arc<dyn BatchRoute>),
}

/// What every worker of one consumer shares.
pub(crate) struct Worker {
    pub settler: Arc<Settler>,
    pub codec: Arc<dyn Codec>,
    /// By event type. Ordered, not hashed: looked up once per message among a handful of
    /// types, where a string comparison or two is cheaper than SipHash over the name.
    pub routes: BTreeMap<String, Route>,
    pub unknown: UnknownEventPolicy,
    pub expired: ExpiredPolicy,
}

impl Worker {
    /// One worker: takes ready jobs until `halt`; jobs not started by then stay in the lanes
    /// for shutdown to give back.
    pub async fn run(self: Arc<Self>, mut halt: watch::Receiver<bool>) {
        // A halt is seen by a plain read before each job; the halt future (one for the
        // worker's life) is polled only while the worker waits for a job, so a busy worker
        // does not register with the signal per job. `halt` itself goes on to retry waits.
        let flag = halt.clone();
        let mut watched = halt.clone();
        let halted = stopped(&mut watched);
        tokio::pin!(halted);
        loop {
            if *flag.borrow() {
                return;
            }
            let job = tokio::select! {
                biased;
                job = self.settler.lanes.next() => job,
                _ = &mut halted => return,
            };
            self.process(job, &mut halt).await;
        }
    }

    async fn process(&self, job: Job, halt: &mut watch::Receiver<bool>) {
        let delivery = &job.delivery;
        // Continue the trace the message carries (or start one for a message that has none,
        // from a publisher that does not trace), so whatever the handler publishes joins it.
        let parent = TraceContext::from_headers(&delivery.message().headers);
        let trace = parent
            .as_ref()
            .map_or_else(TraceContext::new_root, TraceContext::child);
        let settler = &self.settler;
        let span = tracing::info_span!(
            "longshore.handle",
            backend = settler.backend,
            subscription = %settler.subscription,
            topic = %delivery.topic,
            message_id = %delivery.message().id,
            event_type = tracing::field::Empty,
            attempt = delivery.attempt,
            trace_id = %trace.trace_id_display(),
        );
        if let Some(parent) = &parent {
            attach(&span, parent);
        }
        async move {
            match timing_now(job.delivery.message()) {
                Timing::Due => {}
                Timing::Early(left) => return settler.defer(job, left).await,
                Timing::Expired => return settler.expired(job, self.expired).await,
                Timing::Invalid(reason) => {
                    let attempts = job.delivery.attempt;
                    return settler.dead_letter(job, reason, attempts).await;
                }
            }
            let event = match self.codec.decode(job.delivery.message()) {
                Ok(event) => Arc::new(event),
                Err(e) => {
                    let attempts = job.delivery.attempt;
                    let reason = format!("undecodable message: {e}");
                    return settler.dead_letter(job, reason, attempts).await;
                }
            };
            tracing::Span::current().record("event_type", event.event_type.as_str());
            let Some(route) = self.routes.get(&event.event_type) else {
                return match self.unknown {
                    UnknownEventPolicy::Ack => settler.ack(job).await,
                    UnknownEventPolicy::DeadLetter => {
                        let attempts = job.delivery.attempt;
                        let reason = format!("unknown event type {:?}", event.event_type);
                        settler.dead_letter(job, reason, attempts).await
                    }
                };
            };
            match settler.seen_before(&job.delivery.message().id).await {
                Some(false) => {}
                Some(true) => {
                    Counters::inc(&settler.counters.duplicates);
                    return settler.ack(job).await;
                }
                None => return settler.requeue(job).await,
            }
            match route {
                Route::One(handler) => self.run_one(handler, job, event, &trace, halt).await,
                Route::Batch(batch) => {
                    let ctx = HandlerContext {
                        subscription: settler.subscription.clone(),
                        topic: job.delivery.topic.clone(),
                        attempt: job.delivery.attempt,
                        event,
                    };
                    match batch.admit(job, ctx).map_err(|refused| *refused) {
                        Ok(()) => {}
                        Err(Refused::Undecodable(job, reason)) => {
                            let attempts = job.delivery.attempt;
                            settler.dead_letter(job, reason, attempts).await
                        }
                        Err(Refused::Stopped(job)) => settler.requeue(job).await,
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Runs a single-event handler, retrying transient failures in process with backoff.
    async fn run_one(
        &self,
        handler: &ErasedHandler,
        job: Job,
        event: Arc<Event>,
        trace: &TraceContext,
        halt: &mut watch::Receiver<bool>,
    ) {
        let settler = &self.settler;
        let mut attempt = job.delivery.attempt;
        loop {
            let ctx = HandlerContext {
                subscription: settler.subscription.clone(),
                topic: job.delivery.topic.clone(),
                attempt,
                event: event.clone(),
            };
            // A panicking handler is a failed attempt, not a dead consumer.
            let started = std::time::Instant::now();
            let result = trace
                .clone()
                .scope(std::panic::AssertUnwindSafe(handler(ctx)).catch_unwind())
                .await;
            let took = started.elapsed();
            let error = match result {
                Ok(Ok(())) => {
                    settler.attempted(Verdict::Ok, took);
                    return settler.handled(job).await;
                }
                Ok(Err(e)) => e,
                Err(_) => HandlerError::transient("handler panicked"),
            };
            if error.is_permanent() {
                settler.attempted(Verdict::DeadLetter { transient: false }, took);
                let reason = format!("permanent error: {error}");
                return settler.dead_letter(job, reason, attempt).await;
            }
            if attempt >= settler.retry.max_attempts {
                settler.attempted(Verdict::DeadLetter { transient: true }, took);
                let reason = format!("gave up after {attempt} attempts: {error}");
                return settler.dead_letter(job, reason, attempt).await;
            }
            tracing::debug!(attempt, error = %error, "handler failed; retrying");
            settler.attempted(Verdict::Retry, took);
            let delay = settler.retry.backoff(attempt);
            if settler.hands_over(delay) {
                // Long enough to be worth surviving a restart: the broker holds it.
                return settler.retry_later(job, delay).await;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => attempt += 1,
                _ = stopped(halt) => return settler.requeue(job).await,
            }
        }
    }
}
