//! Waiting for quiet: every message published through the bus settled by every subscription
//! that expects it, nothing held by a handler, no publish awaiting its confirm.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::ledger::Ledger;
use super::record::Traffic;

/// [`TestBus::run_until_idle`](crate::testing::TestBus::run_until_idle) timed out: what was
/// still pending, and everything recorded. Its `Display` is the readable report.
#[derive(Debug, Clone)]
pub struct IdleTimeout {
    /// How long the bus waited.
    pub waited: Duration,
    /// One line per piece of work still in flight.
    pub pending: Vec<String>,
    /// Everything recorded when the wait gave up.
    pub traffic: Traffic,
}

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the bus was not idle after {:?}; {} pending:",
            self.waited,
            self.pending.len()
        )?;
        for line in &self.pending {
            writeln!(f, "  - {line}")?;
        }
        write!(f, "recorded traffic:\n{}", self.traffic)
    }
}

impl std::error::Error for IdleTimeout {}

/// Returns once `ledger` has nothing pending, woken by each change it records.
pub(crate) async fn until_idle(ledger: &Ledger, timeout: Duration) -> Result<(), IdleTimeout> {
    let deadline = Instant::now() + timeout;
    let mut changes = ledger.watch();
    loop {
        // Mark the current state seen before reading it: a change after the read wakes us.
        changes.borrow_and_update();
        let pending = ledger.pending();
        if pending.is_empty() {
            return Ok(());
        }
        // The sender lives in the ledger we borrow, so `changed` cannot fail while we wait.
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Err(IdleTimeout {
                waited: timeout,
                pending: ledger.pending(),
                traffic: ledger.traffic(),
            });
        }
    }
}
