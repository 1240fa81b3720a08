//! The memory broker's limits.

use std::time::Duration;

/// Limits of the in-memory broker.
#[derive(Clone, Debug)]
pub struct MemoryConfig {
    /// Most messages a subscription holds (ready + unacknowledged). A publish into a full
    /// subscription waits for room up to `publish_timeout`, then fails with
    /// [`Error::Backpressure`]: memory never grows without bound.
    pub max_queue_depth: usize,
    /// How long a publish waits for room in a full subscription.
    pub publish_timeout: Duration,
    /// Largest payload accepted.
    pub max_payload: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_queue_depth: 100_000,
            publish_timeout: Duration::from_secs(5),
            max_payload: 16 * 1024 * 1024,
        }
    }
}
