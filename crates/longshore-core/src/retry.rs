//! Retry policy: exponential backoff with jitter and a bounded number of attempts.

use std::time::Duration;

/// Backoffs from this long up go to the broker by default ([`RetryPolicy::durable_after`]).
pub const DEFAULT_DURABLE_AFTER: Duration = Duration::from_secs(30);

/// How often and how patiently to retry a transient failure.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (at least 1). After the last, the message is
    /// dead-lettered.
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff: Duration,
    /// Upper bound for any delay.
    pub max_backoff: Duration,
    /// Growth factor between attempts.
    pub multiplier: f64,
    /// Fraction of each delay that is randomised (0.0 = none, 1.0 = "full jitter").
    pub jitter: f64,
    /// Backoffs at least this long are handed to the broker (a delayed `nack`, where the
    /// backend has [`native_delay`](crate::Capabilities::native_delay)) instead of slept in
    /// process, so a retry survives the consumer's restart and holds no delivery meanwhile.
    /// Shorter ones stay in process: cheaper, and they keep the delivery (and its key).
    pub durable_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
            durable_after: DEFAULT_DURABLE_AFTER,
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure is final.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// `max_attempts` attempts with exponential backoff starting at `initial`.
    pub fn exponential(max_attempts: u32, initial: Duration) -> Self {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            initial_backoff: initial,
            ..Self::default()
        }
    }

    /// Sets the upper bound of a delay.
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Sets [`RetryPolicy::durable_after`]: backoffs at least this long are handed to the
    /// broker; `Duration::ZERO` hands over every one, `Duration::MAX` none.
    pub fn with_durable_after(mut self, threshold: Duration) -> Self {
        self.durable_after = threshold;
        self
    }

    /// Sets the jitter fraction (clamped to 0..=1).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter.clamp(0.0, 1.0);
        self
    }

    /// The delay after failed attempt number `attempt` (1-based), jitter applied.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = self.initial_backoff.as_secs_f64() * exp;
        let capped = base.min(self.max_backoff.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * fastrand::f64();
        Duration::from_secs_f64((capped * factor).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let p = RetryPolicy::exponential(10, Duration::from_millis(100))
            .with_max_backoff(Duration::from_secs(1))
            .with_jitter(0.0);
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(400));
        assert_eq!(p.backoff(10), Duration::from_secs(1));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_range() {
        let p = RetryPolicy::exponential(3, Duration::from_millis(100)).with_jitter(0.5);
        for _ in 0..1000 {
            let d = p.backoff(1);
            assert!(
                d <= Duration::from_millis(100) && d >= Duration::from_millis(50),
                "{d:?}"
            );
        }
    }
}
