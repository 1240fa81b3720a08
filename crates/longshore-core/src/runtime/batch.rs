//! Batch handlers: a runner per `on_batch` registration gathers decoded events into batches of
//! up to `max_size` (or fewer once `max_wait` passed since the first), calls the handler once
//! per batch, and settles each delivery by its own outcome. Elements to retry wait out their
//! backoff beside the runner and join a later batch, so a retry holds back its own key only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::Instrument;

use super::handler::{HandlerContext, HandlerError};
use super::lanes::Job;
use super::settle::{Settler, Verdict};
use super::stats::Counters;
use super::stopped;
use crate::event::DomainEvent;

/// Why a job did not join a batch.
pub(crate) enum Refused {
    /// Its data does not fit the batch's event type (dead-letter it).
    Undecodable(Job, String),
    /// The runner has stopped (shutdown): give the job back.
    Stopped(Job),
}

/// The worker's side of a batch runner.
pub(crate) trait BatchRoute: Send + Sync {
    /// Decodes the job's event into the runner's type and queues it for the next batch.
    fn admit(&self, job: Job, ctx: HandlerContext) -> Result<(), Box<Refused>>;
}

type RunnerFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A batch handler registered on a consumer that has not started yet.
pub(crate) struct BatchSpec {
    /// Largest batch: the consumer holds at least this many deliveries so a batch can fill.
    pub max_size: usize,
    #[allow(clippy::type_complexity)]
    start: Box<
        dyn FnOnce(Arc<Settler>, watch::Receiver<bool>) -> (Arc<dyn BatchRoute>, RunnerFuture)
            + Send,
    >,
}

impl BatchSpec {
    /// The route workers hand jobs to, and the runner to spawn; the runner stops taking new
    /// batches once `halt` is set and gives back what it holds.
    pub fn start(
        self,
        settler: Arc<Settler>,
        halt: watch::Receiver<bool>,
    ) -> (Arc<dyn BatchRoute>, RunnerFuture) {
        (self.start)(settler, halt)
    }
}

/// The spec of a batch handler of `T`.
pub(crate) fn batch_spec<T, F, Fut>(max_size: usize, max_wait: Duration, handler: F) -> BatchSpec
where
    T: DomainEvent,
    F: Fn(Vec<(T, HandlerContext)>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<(), HandlerError>>> + Send + 'static,
{
    let max_size = max_size.clamp(1, usize::from(u16::MAX));
    BatchSpec {
        max_size,
        start: Box::new(move |settler, halt| {
            let (tx, rx) = mpsc::unbounded_channel();
            let runner = Runner {
                handler,
                max_size,
                max_wait,
                settler,
                rx,
                delayed: Vec::new(),
                halt,
            };
            (Arc::new(Route { tx }), Box::pin(runner.run()))
        }),
    }
}

struct Item<T> {
    job: Job,
    ctx: HandlerContext,
    /// Decoded on admission; a retry decodes again from `ctx.event`.
    typed: Option<T>,
    /// When a retried element may join a batch again.
    due: Instant,
}

struct Route<T> {
    tx: mpsc::UnboundedSender<Item<T>>,
}

impl<T: DomainEvent> BatchRoute for Route<T> {
    fn admit(&self, job: Job, ctx: HandlerContext) -> Result<(), Box<Refused>> {
        let typed = match ctx.event.to_typed::<T>() {
            Ok(typed) => typed,
            Err(e) => {
                let reason = format!("permanent error: {e}");
                return Err(Box::new(Refused::Undecodable(job, reason)));
            }
        };
        let item = Item {
            job,
            ctx,
            typed: Some(typed),
            due: Instant::now(),
        };
        self.tx
            .send(item)
            .map_err(|e| Box::new(Refused::Stopped(e.0.job)))
    }
}

struct Runner<T, F> {
    handler: F,
    max_size: usize,
    max_wait: Duration,
    settler: Arc<Settler>,
    rx: mpsc::UnboundedReceiver<Item<T>>,
    /// Elements waiting out a retry backoff.
    delayed: Vec<Item<T>>,
    halt: watch::Receiver<bool>,
}

impl<T, F, Fut> Runner<T, F>
where
    T: DomainEvent,
    F: Fn(Vec<(T, HandlerContext)>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<(), HandlerError>>> + Send + 'static,
{
    async fn run(mut self) {
        while let Some(batch) = self.collect().await {
            self.handle(batch).await;
        }
        self.give_back().await;
    }

    /// The next batch; `None` once halted (what was gathered is kept for giving back).
    async fn collect(&mut self) -> Option<Vec<Item<T>>> {
        let mut batch = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            self.take_due(&mut batch);
            if batch.len() >= self.max_size {
                return Some(batch);
            }
            if deadline.is_none() && !batch.is_empty() {
                deadline = Some(Instant::now() + self.max_wait);
            }
            let next_due = self.delayed.iter().map(|i| i.due).min();
            tokio::select! {
                biased;
                _ = stopped(&mut self.halt) => {
                    self.delayed.append(&mut batch);
                    return None;
                }
                _ = sleep_until(deadline) => return Some(batch),
                _ = sleep_until(next_due) => {}
                item = self.rx.recv() => match item {
                    Some(item) => batch.push(item),
                    None => {
                        self.delayed.append(&mut batch);
                        return None;
                    }
                },
            }
        }
    }

    /// Moves the retried elements whose backoff is over into `batch`, as room allows.
    fn take_due(&mut self, batch: &mut Vec<Item<T>>) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.delayed.len() && batch.len() < self.max_size {
            if self.delayed[i].due <= now {
                batch.push(self.delayed.swap_remove(i));
            } else {
                i += 1;
            }
        }
    }

    async fn handle(&mut self, batch: Vec<Item<T>>) {
        let settler = self.settler.clone();
        let mut inputs = Vec::with_capacity(batch.len());
        let mut items = Vec::with_capacity(batch.len());
        for mut item in batch {
            let typed = match item.typed.take() {
                Some(typed) => Ok(typed),
                None => item.ctx.event.to_typed::<T>(),
            };
            match typed {
                Ok(typed) => {
                    inputs.push((typed, item.ctx.clone()));
                    items.push(item);
                }
                Err(e) => {
                    let reason = format!("permanent error: {e}");
                    settler
                        .dead_letter(item.job, reason, item.ctx.attempt)
                        .await;
                }
            }
        }
        if items.is_empty() {
            return;
        }
        let span = tracing::info_span!(
            "longshore.handle_batch",
            backend = settler.backend,
            subscription = %settler.subscription,
            event_type = T::EVENT_TYPE,
            size = items.len(),
        );
        let started = std::time::Instant::now();
        // A panicking handler fails every element of its batch transiently.
        let result = std::panic::AssertUnwindSafe((self.handler)(inputs))
            .catch_unwind()
            .instrument(span)
            .await;
        let took = started.elapsed();
        Counters::inc(&settler.counters.batches);
        let (mut outcomes, missing) = match result {
            Ok(outcomes) => (
                outcomes.into_iter(),
                "batch handler returned no outcome for it",
            ),
            Err(_) => (Vec::new().into_iter(), "batch handler panicked"),
        };
        for mut item in items {
            let outcome = outcomes
                .next()
                .unwrap_or_else(|| Err(HandlerError::transient(missing)));
            let attempt = item.ctx.attempt;
            match outcome {
                Ok(()) => {
                    settler.attempted(Verdict::Ok, took);
                    settler.handled(item.job).await;
                }
                Err(e) if e.is_permanent() => {
                    settler.attempted(Verdict::DeadLetter { transient: false }, took);
                    let reason = format!("permanent error: {e}");
                    settler.dead_letter(item.job, reason, attempt).await;
                }
                Err(e) if attempt >= settler.retry.max_attempts => {
                    settler.attempted(Verdict::DeadLetter { transient: true }, took);
                    let reason = format!("gave up after {attempt} attempts: {e}");
                    settler.dead_letter(item.job, reason, attempt).await;
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "batch element failed; retrying");
                    settler.attempted(Verdict::Retry, took);
                    item.due = Instant::now() + settler.retry.backoff(attempt);
                    item.ctx.attempt += 1;
                    self.delayed.push(item);
                }
            }
        }
    }

    /// On shutdown: everything gathered, waiting or still queued goes back unacknowledged.
    async fn give_back(mut self) {
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            self.delayed.push(item);
        }
        for item in std::mem::take(&mut self.delayed) {
            self.settler.requeue(item.job).await;
        }
    }
}

/// Sleeps until `at`, or forever without one (a `select!` branch that never fires).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
