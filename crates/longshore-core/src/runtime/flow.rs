//! Flow control: pause / resume, the circuit breaker and the rate limit. All three act on the
//! fetch loop only: a consumer held back stops taking deliveries from its stream, and what it
//! already took finishes as usual.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::stats::Counters;
use crate::observe::names;

/// Circuit breaker settings: after `failures` consecutive transient handler failures the
/// consumer stops fetching for `cool_off`, then lets one message through as a probe; a success
/// closes the breaker, a transient failure opens it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitBreaker {
    failures: u32,
    cool_off: Duration,
}

impl CircuitBreaker {
    /// Opens after `failures` (at least 1) consecutive transient failures, for `cool_off`.
    pub fn new(failures: u32, cool_off: Duration) -> Self {
        CircuitBreaker {
            failures: failures.max(1),
            cool_off,
        }
    }
}

/// The state of a consumer's circuit breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BreakerState {
    /// Fetching normally (also the state of a consumer without a breaker).
    #[default]
    Closed,
    /// Not fetching until the cool-off ends.
    Open,
    /// The cool-off ended: one probe message is let through; its outcome decides.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `longshore_circuit_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// What a running consumer is doing, from [`ConsumerHandle::health`](crate::ConsumerHandle::health).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerHealth {
    /// Still consuming (not shut down, stream not ended).
    pub running: bool,
    /// Paused by [`ConsumerHandle::pause`](crate::ConsumerHandle::pause).
    pub paused: bool,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
}

impl ConsumerHealth {
    /// Ready: running and its circuit breaker not open (an open breaker means the handler
    /// keeps failing). A paused consumer is ready: pausing is the service's own choice.
    pub fn is_ready(&self) -> bool {
        self.running && self.breaker != BreakerState::Open
    }
}

/// A cloneable view of a running consumer's health, from
/// [`ConsumerHandle::probe`](crate::ConsumerHandle::probe), for a health endpoint that does
/// not own the handle.
#[derive(Clone)]
pub struct ConsumerProbe {
    pub(crate) flow: std::sync::Arc<Flow>,
    pub(crate) stop: watch::Receiver<bool>,
    // Only read (`is_finished`); the probe never aborts the consumer.
    pub(crate) task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for ConsumerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerProbe").finish_non_exhaustive()
    }
}

impl ConsumerProbe {
    /// Whether the consumer was shut down on purpose ([`ConsumerHandle::shutdown`](crate::ConsumerHandle::shutdown)),
    /// as opposed to ending by itself.
    pub fn is_shut_down(&self) -> bool {
        *self.stop.borrow()
    }

    /// The consumer's health now: not running once it was shut down, its handle dropped, or
    /// its subscription stream ended.
    pub fn health(&self) -> ConsumerHealth {
        ConsumerHealth {
            running: !self.task.is_finished() && !*self.stop.borrow(),
            paused: self.flow.is_paused(),
            breaker: self.flow.breaker_state(),
        }
    }
}

/// One handler attempt as the breaker counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attempt {
    Succeeded,
    FailedTransiently,
}

#[derive(Clone, Copy, Debug)]
struct BreakerInner {
    state: BreakerState,
    consecutive: u32,
    until: Instant,
    /// In half-open: the probe was let through and its outcome is awaited.
    probing: bool,
}

/// The flow state a consumer's fetch loop, workers and handle share.
pub(crate) struct Flow {
    paused: watch::Sender<bool>,
    breaker: Option<(CircuitBreaker, watch::Sender<BreakerInner>)>,
    rate: Option<f64>,
    breaker_gauge: metrics::Gauge,
    paused_gauge: metrics::Gauge,
    counters: std::sync::Arc<Counters>,
}

impl Flow {
    pub fn new(
        breaker: Option<CircuitBreaker>,
        rate: Option<f64>,
        counters: std::sync::Arc<Counters>,
        backend: &'static str,
        subscription: &str,
    ) -> Self {
        let labels = [
            ("backend", backend.to_string()),
            ("subscription", subscription.to_string()),
        ];
        let breaker_gauge = metrics::gauge!(names::CIRCUIT_BREAKER_STATE, &labels);
        let paused_gauge = metrics::gauge!(names::CONSUMER_PAUSED, &labels);
        breaker_gauge.set(0.0);
        paused_gauge.set(0.0);
        let closed = BreakerInner {
            state: BreakerState::Closed,
            consecutive: 0,
            until: Instant::now(),
            probing: false,
        };
        Flow {
            paused: watch::channel(false).0,
            breaker: breaker.map(|b| (b, watch::channel(closed).0)),
            rate: rate.filter(|r| r.is_finite() && *r > 0.0),
            breaker_gauge,
            paused_gauge,
            counters,
        }
    }

    pub fn set_paused(&self, paused: bool) {
        self.paused.send_replace(paused);
        self.paused_gauge.set(if paused { 1.0 } else { 0.0 });
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.breaker
            .as_ref()
            .map_or(BreakerState::Closed, |(_, tx)| tx.borrow().state)
    }

    /// Counts one handler attempt (permanent errors are not counted: they say nothing about
    /// the downstream).
    pub fn attempt(&self, attempt: Attempt) {
        let Some((config, tx)) = &self.breaker else {
            return;
        };
        let mut opened = false;
        tx.send_if_modified(|b| {
            let before = (b.state, b.probing);
            match attempt {
                Attempt::Succeeded => {
                    b.consecutive = 0;
                    b.state = BreakerState::Closed;
                    b.probing = false;
                }
                Attempt::FailedTransiently => {
                    b.consecutive = b.consecutive.saturating_add(1);
                    let trips = match b.state {
                        BreakerState::Closed => b.consecutive >= config.failures,
                        BreakerState::HalfOpen => true,
                        BreakerState::Open => false,
                    };
                    if trips {
                        b.state = BreakerState::Open;
                        b.until = Instant::now() + config.cool_off;
                        b.probing = false;
                        opened = true;
                    }
                }
            }
            before != (b.state, b.probing)
        });
        if opened {
            Counters::inc(&self.counters.breaker_opened);
            tracing::warn!(cool_off = ?config.cool_off, "circuit breaker opened; fetching stops");
        }
        self.breaker_gauge.set(self.breaker_state().gauge_value());
    }

    /// A delivery was settled. In half-open, a probe settled without a handler verdict (a
    /// permanent error, an undecodable message) lets another probe through, so the breaker
    /// cannot wait forever on a probe that will never report.
    pub fn settled(&self) {
        if let Some((_, tx)) = &self.breaker {
            tx.send_if_modified(|b| {
                let probe_done = b.state == BreakerState::HalfOpen && b.probing;
                b.probing &= !probe_done;
                probe_done
            });
        }
    }

    /// The fetch loop's side: waits in [`Gate::pass`] until a taken delivery may go on.
    pub fn gate(&self) -> Gate<'_> {
        Gate {
            flow: self,
            paused: self.paused.subscribe(),
            breaker: self.breaker.as_ref().map(|(_, tx)| tx.subscribe()),
            bucket: self.rate.map(TokenBucket::new),
        }
    }
}

/// What the fetch loop waits on before handing a delivery on.
pub(crate) struct Gate<'a> {
    flow: &'a Flow,
    paused: watch::Receiver<bool>,
    breaker: Option<watch::Receiver<BreakerInner>>,
    bucket: Option<TokenBucket>,
}

impl Gate<'_> {
    /// Resolves once the consumer is not paused, the breaker lets a message through and the
    /// rate limit has a token. Cancel-safe, so the caller can race it against stop.
    pub async fn pass(&mut self) {
        loop {
            // Pause first: a paused consumer must not use up the breaker's probe.
            until(&mut self.paused, false).await;
            if self.breaker_lets_through().await {
                break;
            }
        }
        if let Some(bucket) = &mut self.bucket {
            bucket.take().await;
        }
    }

    /// True when a message may go now; false after waiting for a change worth re-checking.
    async fn breaker_lets_through(&mut self) -> bool {
        let (Some(rx), Some((_, tx))) = (&mut self.breaker, &self.flow.breaker) else {
            return true;
        };
        let now = *rx.borrow_and_update();
        match now.state {
            BreakerState::Closed => true,
            BreakerState::Open => {
                tokio::select! {
                    _ = tokio::time::sleep_until(now.until) => {
                        tx.send_if_modified(|b| {
                            let due = b.state == BreakerState::Open && b.until <= Instant::now();
                            if due {
                                b.state = BreakerState::HalfOpen;
                                b.probing = false;
                            }
                            due
                        });
                        self.flow.breaker_gauge.set(self.flow.breaker_state().gauge_value());
                    }
                    _ = rx.changed() => {}
                    _ = until(&mut self.paused, true) => {}
                }
                false
            }
            BreakerState::HalfOpen => {
                let probe = tx.send_if_modified(|b| {
                    let free = b.state == BreakerState::HalfOpen && !b.probing;
                    b.probing |= free;
                    free
                });
                if !probe {
                    tokio::select! {
                        _ = rx.changed() => {}
                        _ = until(&mut self.paused, true) => {}
                    }
                }
                probe
            }
        }
    }
}

/// A token bucket of messages per second, holding at most a tenth of a second's worth (at
/// least one), so a consumer that was idle does not burst far above its rate.
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
        let capacity = (rate / 10.0).max(1.0);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    async fn take(&mut self) {
        loop {
            let now = Instant::now();
            let earned = now.duration_since(self.last).as_secs_f64() * self.rate;
            self.tokens = (self.tokens + earned).min(self.capacity);
            self.last = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

/// Resolves once `rx` holds `value` (or its sender is gone), dropping the non-`Send` guard.
async fn until(rx: &mut watch::Receiver<bool>, value: bool) {
    let _ = rx.wait_for(|v| *v == value).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::{Attempt, BreakerState, CircuitBreaker, Flow, TokenBucket};
    use crate::runtime::stats::Counters;

    fn flow(breaker: Option<CircuitBreaker>, rate: Option<f64>) -> Flow {
        Flow::new(breaker, rate, Arc::new(Counters::default()), "memory", "s")
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_spaces_messages_at_the_rate() {
        let mut bucket = TokenBucket::new(10.0);
        let start = Instant::now();
        for _ in 0..11 {
            bucket.take().await;
        }
        // One token to start with, then ten more at 10 per second.
        assert!(start.elapsed() >= Duration::from_millis(1000));
        assert!(start.elapsed() < Duration::from_millis(1100));
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_probes_once_and_closes() {
        let flow = flow(Some(CircuitBreaker::new(2, Duration::from_secs(5))), None);
        let mut gate = flow.gate();
        flow.attempt(Attempt::FailedTransiently);
        assert_eq!(flow.breaker_state(), BreakerState::Closed);
        flow.attempt(Attempt::FailedTransiently);
        assert_eq!(flow.breaker_state(), BreakerState::Open);
        let start = Instant::now();
        gate.pass().await;
        assert!(start.elapsed() >= Duration::from_secs(5));
        assert_eq!(flow.breaker_state(), BreakerState::HalfOpen);
        // The probe is out: the next message waits for its outcome.
        let second = tokio::time::timeout(Duration::from_secs(60), gate.pass()).await;
        assert!(second.is_err());
        flow.attempt(Attempt::Succeeded);
        assert_eq!(flow.breaker_state(), BreakerState::Closed);
        gate.pass().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again_and_a_silent_one_frees_the_next() {
        let flow = flow(Some(CircuitBreaker::new(1, Duration::from_secs(1))), None);
        let mut gate = flow.gate();
        flow.attempt(Attempt::FailedTransiently);
        gate.pass().await;
        flow.attempt(Attempt::FailedTransiently);
        assert_eq!(flow.breaker_state(), BreakerState::Open);
        gate.pass().await;
        // Settled without a verdict (a permanent error): another probe may go.
        flow.settled();
        gate.pass().await;
        assert_eq!(flow.breaker_state(), BreakerState::HalfOpen);
    }
}
