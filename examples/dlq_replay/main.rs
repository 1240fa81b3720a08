//! Dead-letter replay: inspect the dead letters of a subscription and send chosen ones back to
//! the topic they were first published to.
//!
//! Dead letters live in `dlq.<subscription>` on the same backend, with headers naming the
//! reason (`x-dead-letter-reason`), the original topic (`x-original-topic`) and the attempts
//! made (`x-attempts`). Replaying one publishes it again to its original topic without those
//! headers (same message id, same body) and acknowledges the dead letter only after the
//! backend confirmed the publish: a failed replay leaves it in the dead-letter queue.
//!
//! By default the example is self-contained: a payments consumer dead-letters two payments
//! (a provider timeout, retried until the attempts run out, and a declined card, dead-lettered
//! at once), the provider recovers, and the dead letters whose text matches the filter
//! (default `timeout`) are replayed and handled; the others stay in the dead-letter queue.
//!
//!     cargo run --example dlq_replay
//!     LONGSHORE_URL=nats://127.0.0.1:4222 cargo run --features full --example dlq_replay
//!     cargo run --example dlq_replay -- --filter declined      # replay the other one
//!     cargo run --example dlq_replay -- --all                  # replay both
//!
//! As a tool on an existing subscription (no demo; lists only, unless `--filter` or `--all`):
//!
//!     LONGSHORE_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --features full \
//!       --example dlq_replay -- --existing --subscription billing --filter "timeout"
//!
//! Options (or environment): `--subscription NAME` (`DLQ_SUBSCRIPTION`; demo default
//! `payments-<random>`), `--filter TEXT` (`DLQ_FILTER`: replay dead letters whose id, event
//! type, reason, original topic or body contains TEXT), `--all`, `--existing`, `--dry-run`,
//! `--keep` (demo: leave the remaining dead letters for a later `--existing` run),
//! `--idle-ms N` (with `--existing`: stop reading after N ms without a new dead letter, default
//! 2000), `--max N` (at most N dead letters per run, default 100).
//!
//! Replay is at-least-once like everything else: on a backend that re-reads from a committed
//! position (Kafka), a replayed dead letter behind one that is kept can be seen again by the
//! next run; consumers with an inbox drop the copy.

mod demo;
mod letters;
mod options;

use std::collections::BTreeSet;
use std::time::Duration;

use longshore::prelude::*;

use letters::{inspect_and_replay, read_letters};
pub use options::Options;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest any single awaited step may take before the run fails.
const WAIT: Duration = Duration::from_secs(60);

/// What a demo run observed (already checked by [`run`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Payments dead-lettered by the failing consumer.
    pub dead_lettered: BTreeSet<String>,
    /// Payments replayed.
    pub replayed: BTreeSet<String>,
    /// Payments the consumer handled successfully after the replay.
    pub handled_after_replay: BTreeSet<String>,
    /// Payments in the dead-letter queue at the end (kept, or failed again after replay).
    pub dead_at_end: BTreeSet<String>,
}

/// Runs the demo (or, with `options.existing`, the tool) on `config`'s backend.
pub async fn run(config: &longshore::Config, options: &Options) -> Result<Report, BoxError> {
    let ls = longshore::connect_with(config).await?;
    println!("backend: {} ({config})", ls.backend);
    let max = usize::from(options.max.unwrap_or(100).max(1));
    let result = if options.existing {
        existing(&ls, options, max).await
    } else {
        demo::demo(&ls, options, max).await
    };
    ls.publisher.close().await?;
    ls.subscriber.close().await?;
    let report = result?;
    println!("ok");
    Ok(report)
}

/// The tool: lists an existing subscription's dead letters and replays the chosen ones.
async fn existing(
    ls: &longshore::Longshore,
    options: &Options,
    max: usize,
) -> Result<Report, BoxError> {
    let name = options
        .subscription
        .as_deref()
        .ok_or("--existing needs --subscription NAME (or DLQ_SUBSCRIPTION)")?;
    if options.filter.is_none() && !options.all {
        println!("no --filter or --all: listing only");
    }
    let dlq_sub = Subscription::dead_letters_of(name).with_prefetch(max as u16);
    let mut dlq = ls.subscriber.subscribe(&dlq_sub).await?;
    let idle = options.idle.unwrap_or(Duration::from_millis(2000));
    let letters = read_letters(&mut dlq, None, idle, max).await?;
    let dead_lettered = letters.iter().map(|l| l.label.clone()).collect();
    let (replayed, kept) = inspect_and_replay(ls.publisher.as_ref(), letters, options).await?;
    Ok(Report {
        dead_lettered,
        replayed,
        handled_after_replay: BTreeSet::new(),
        dead_at_end: kept,
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let options = Options::parse(std::env::args().skip(1))?;
    run(&longshore::Config::from_env(), &options).await?;
    Ok(())
}
