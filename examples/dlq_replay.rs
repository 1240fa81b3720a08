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

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use longshore::prelude::*;
use longshore::subscriber::{
    HEADER_DLQ_AT, HEADER_DLQ_ATTEMPTS, HEADER_DLQ_REASON, HEADER_DLQ_SUBSCRIPTION,
    HEADER_DLQ_TOPIC,
};
use longshore::{Codec, Delivery, DeliveryStream, JsonCodec};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The longest any single awaited step may take before the run fails.
const WAIT: Duration = Duration::from_secs(60);

/// Headers a dead letter carries that the replayed message must not.
const DEAD_LETTER_HEADERS: [&str; 5] = [
    HEADER_DLQ_REASON,
    HEADER_DLQ_TOPIC,
    HEADER_DLQ_SUBSCRIPTION,
    HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_AT,
];

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PaymentRequested {
    payment_id: String,
    provider: String,
    card: String,
    amount_cents: u64,
}
impl DomainEvent for PaymentRequested {
    const EVENT_TYPE: &'static str = "payment_requested";
}

/// What to inspect and what to replay.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The subscription whose dead letters to read (demo: also the one it creates).
    pub subscription: Option<String>,
    /// Replay dead letters whose text contains this.
    pub filter: Option<String>,
    /// Replay every dead letter.
    pub all: bool,
    /// Only inspect and replay an existing subscription's dead letters; no demo.
    pub existing: bool,
    /// Print what would be replayed, replay nothing.
    pub dry_run: bool,
    /// With `existing`: how long to wait for one more dead letter before stopping.
    pub idle: Option<Duration>,
    /// At most this many dead letters per run.
    pub max: Option<u16>,
    /// Demo: leave what remains in the dead-letter queue (for a later `--existing` run).
    pub keep: bool,
}

impl Options {
    fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, BoxError> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut o = Options {
            subscription: env("DLQ_SUBSCRIPTION"),
            filter: env("DLQ_FILTER"),
            ..Options::default()
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--subscription" => o.subscription = Some(value("--subscription")?),
                "--filter" => o.filter = Some(value("--filter")?),
                "--all" => o.all = true,
                "--existing" => o.existing = true,
                "--dry-run" => o.dry_run = true,
                "--keep" => o.keep = true,
                "--idle-ms" => {
                    o.idle = Some(Duration::from_millis(value("--idle-ms")?.parse()?));
                }
                "--max" => o.max = Some(value("--max")?.parse()?),
                "-h" | "--help" => {
                    println!(
                        "usage: dlq_replay [--subscription NAME] [--filter TEXT | --all] [--dry-run] [--keep]\n\
                         \x20      dlq_replay --existing --subscription NAME [--filter TEXT | --all] [--dry-run] [--idle-ms N] [--max N]\n\
                         env: LONGSHORE_URL (default memory://), DLQ_SUBSCRIPTION, DLQ_FILTER"
                    );
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other:?} (try --help)").into()),
            }
        }
        Ok(o)
    }

    /// Whether a dead letter is chosen for replay.
    fn chooses(&self, letter: &Letter) -> bool {
        if self.all {
            return true;
        }
        match &self.filter {
            Some(text) => letter.text().contains(text.as_str()),
            None => false,
        }
    }
}

/// One dead letter, read and not yet settled.
struct Letter {
    delivery: Delivery,
    event_type: String,
    /// `payment_id` for the demo's events, else the message id.
    label: String,
    reason: String,
    original_topic: Option<String>,
    attempts: String,
}

impl Letter {
    fn new(delivery: Delivery) -> Letter {
        let h = &delivery.message.headers;
        let header = |name: &str| h.get(name).cloned();
        let event = JsonCodec.decode(&delivery.message).ok();
        let label = event
            .as_ref()
            .and_then(|e| e.data.get("payment_id"))
            .and_then(|v| v.as_str())
            .map_or_else(|| delivery.message.id.clone(), str::to_string);
        Letter {
            event_type: event.map_or_else(|| "(undecodable)".to_string(), |e| e.event_type),
            label,
            reason: header(HEADER_DLQ_REASON).unwrap_or_default(),
            original_topic: header(HEADER_DLQ_TOPIC),
            attempts: header(HEADER_DLQ_ATTEMPTS).unwrap_or_else(|| "?".to_string()),
            delivery,
        }
    }

    fn text(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.delivery.message.id,
            self.event_type,
            self.reason,
            self.original_topic.as_deref().unwrap_or(""),
            String::from_utf8_lossy(&self.delivery.message.payload)
        )
    }

    fn print(&self) {
        println!(
            "  {} id={} type={} topic={} attempts={} reason={:?}",
            self.label,
            self.delivery.message.id,
            self.event_type,
            self.original_topic.as_deref().unwrap_or("(none)"),
            self.attempts,
            self.reason
        );
    }
}

/// Sends `letter` back to its original topic without the dead-letter headers; acknowledges
/// the dead letter only after the publish was confirmed. On failure the dead letter is given
/// back (it stays in the dead-letter queue) and the error returned.
async fn replay(publisher: &dyn Publisher, letter: Letter) -> Result<(), BoxError> {
    let Some(topic) = letter.original_topic.clone() else {
        letter.delivery.nack(None).await?;
        return Err(format!("{}: no {HEADER_DLQ_TOPIC} header; kept", letter.label).into());
    };
    let mut message = letter.delivery.message.clone();
    for name in DEAD_LETTER_HEADERS {
        message.headers.remove(name);
    }
    match publisher.publish(&topic, message).await {
        Ok(()) => {
            letter.delivery.ack().await?;
            println!("replayed {} to {topic}", letter.label);
            Ok(())
        }
        Err(e) => {
            let label = letter.label.clone();
            letter.delivery.nack(None).await?;
            Err(
                format!("replaying {label} to {topic} failed ({e}); kept in the dead-letter queue")
                    .into(),
            )
        }
    }
}

async fn next_letter(dlq: &mut DeliveryStream, wait: Duration) -> Result<Option<Letter>, BoxError> {
    match tokio::time::timeout(wait, dlq.next()).await {
        Err(_) => Ok(None),
        Ok(None) => Err("dead-letter stream ended".into()),
        Ok(Some(delivery)) => Ok(Some(Letter::new(delivery?))),
    }
}

/// Reads dead letters: `expected` of them (failing after [`WAIT`] each), or, without a count,
/// until none arrives for `idle`.
async fn read_letters(
    dlq: &mut DeliveryStream,
    expected: Option<usize>,
    idle: Duration,
    max: usize,
) -> Result<Vec<Letter>, BoxError> {
    let mut letters = Vec::new();
    while letters.len() < expected.unwrap_or(max).min(max) {
        let wait = if expected.is_some() { WAIT } else { idle };
        match next_letter(dlq, wait).await? {
            Some(letter) => letters.push(letter),
            None if expected.is_some() => {
                return Err(format!(
                    "expected {} dead letters, got {} within {WAIT:?}",
                    expected.unwrap_or(0),
                    letters.len()
                )
                .into())
            }
            None => break,
        }
    }
    Ok(letters)
}

/// Lists the letters, replays the chosen ones, gives the rest back. Returns the labels
/// replayed and kept.
async fn inspect_and_replay(
    publisher: &dyn Publisher,
    letters: Vec<Letter>,
    options: &Options,
) -> Result<(BTreeSet<String>, BTreeSet<String>), BoxError> {
    println!("{} dead letters:", letters.len());
    letters.iter().for_each(Letter::print);
    let (mut replayed, mut kept) = (BTreeSet::new(), BTreeSet::new());
    let mut failures = Vec::new();
    for letter in letters {
        let label = letter.label.clone();
        if !options.chooses(&letter) || options.dry_run {
            if options.chooses(&letter) {
                println!("would replay {label} (dry run)");
            }
            letter.delivery.nack(None).await?;
            kept.insert(label);
            continue;
        }
        match replay(publisher, letter).await {
            Ok(()) => {
                replayed.insert(label);
            }
            Err(e) => {
                println!("{e}");
                failures.push(e.to_string());
                kept.insert(label);
            }
        }
    }
    println!(
        "replayed {:?}; kept in the dead-letter queue {:?}",
        replayed, kept
    );
    if !failures.is_empty() {
        return Err(format!("{} replays failed", failures.len()).into());
    }
    Ok((replayed, kept))
}

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

/// What the payments handler did with one delivery.
#[derive(Debug)]
struct Handled {
    payment_id: String,
    ok: bool,
    had_dead_letter_headers: bool,
}

/// Runs the demo (or, with `options.existing`, the tool) on `config`'s backend.
pub async fn run(config: &longshore::Config, options: &Options) -> Result<Report, BoxError> {
    let ls = longshore::connect_with(config).await?;
    println!("backend: {} ({config})", ls.backend);
    let max = usize::from(options.max.unwrap_or(100).max(1));
    let result = if options.existing {
        existing(&ls, options, max).await
    } else {
        demo(&ls, options, max).await
    };
    ls.publisher.close().await?;
    ls.subscriber.close().await?;
    let report = result?;
    println!("ok");
    Ok(report)
}

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

async fn demo(
    ls: &longshore::Longshore,
    options: &Options,
    max: usize,
) -> Result<Report, BoxError> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let name = options
        .subscription
        .clone()
        .unwrap_or_else(|| format!("payments-{run}"));
    let topic = format!("{name}.payment_requested");
    let options = Options {
        filter: options
            .filter
            .clone()
            .or_else(|| Some("timeout".to_string())),
        ..options.clone()
    };

    // Keep the dead letters from the start (a subscription keeps what is published after it
    // exists).
    let dlq_sub = Subscription::dead_letters_of(&name).with_prefetch(max as u16);
    ls.subscriber.ensure_subscription(&dlq_sub).await?;

    let provider_up = Arc::new(AtomicBool::new(false));
    let (handled_tx, mut handled_rx) = mpsc::unbounded_channel::<Handled>();
    let up = provider_up.clone();
    let consumer = Consumer::new(
        ls.subscriber.clone(),
        Subscription::new(name.clone(), [format!("{name}.*")]),
    )
    .concurrency(1)
    .retry(RetryPolicy::exponential(3, Duration::from_millis(20)))
    .on(move |p: PaymentRequested, ctx: HandlerContext| {
        let (tx, up) = (handled_tx.clone(), up.clone());
        async move {
            let had_dead_letter_headers = DEAD_LETTER_HEADERS
                .iter()
                .any(|h| ctx.event.metadata.headers.contains_key(*h));
            let outcome = if p.card == "expired" {
                Err(HandlerError::permanent("card declined: expired"))
            } else if p.provider == "slowpay" && !up.load(Ordering::SeqCst) {
                Err(HandlerError::transient("slowpay provider timeout"))
            } else {
                Ok(())
            };
            println!(
                "payments: {} via {} attempt {}: {}",
                p.payment_id,
                p.provider,
                ctx.attempt,
                match &outcome {
                    Ok(()) => "charged".to_string(),
                    Err(e) => format!("failed ({e})"),
                }
            );
            let _ = tx.send(Handled {
                payment_id: p.payment_id,
                ok: outcome.is_ok(),
                had_dead_letter_headers,
            });
            outcome
        }
    })
    .start()
    .await?;

    let publisher = EventPublisher::new(ls.publisher.clone());
    let payments = [
        ("p-1", "acme", "visa"),
        ("p-2", "slowpay", "visa"),
        ("p-3", "acme", "expired"),
    ];
    for (id, provider, card) in payments {
        let event = Event::from_typed(&PaymentRequested {
            payment_id: id.into(),
            provider: provider.into(),
            card: card.into(),
            amount_cents: 1999,
        })?
        .with_aggregate_id(id);
        publisher.publish_to(&topic, &event).await?;
    }
    println!("published p-1 (ok), p-2 (provider down), p-3 (expired card) to {topic}");

    // p-1 is charged; p-2 fails 3 times then is dead-lettered; p-3 is dead-lettered at once.
    let mut dlq = ls.subscriber.subscribe(&dlq_sub).await?;
    let letters = read_letters(&mut dlq, Some(2), WAIT, max).await?;
    let dead_lettered: BTreeSet<String> = letters.iter().map(|l| l.label.clone()).collect();
    let expected_dead = BTreeSet::from(["p-2".to_string(), "p-3".to_string()]);
    if dead_lettered != expected_dead {
        return Err(format!("dead letters {dead_lettered:?}, expected {expected_dead:?}").into());
    }
    for letter in &letters {
        let (reason_ok, attempts_ok) = match letter.label.as_str() {
            "p-2" => (letter.reason.contains("timeout"), letter.attempts == "3"),
            _ => (letter.reason.contains("declined"), letter.attempts == "1"),
        };
        if !reason_ok || !attempts_ok || letter.original_topic.as_deref() != Some(topic.as_str()) {
            letter.print();
            return Err(format!("dead letter {} has the wrong headers", letter.label).into());
        }
    }

    provider_up.store(true, Ordering::SeqCst);
    println!(
        "slowpay is back up; filter: {:?}{}",
        options.filter,
        if options.all { " (--all)" } else { "" }
    );
    // The handler reported each attempt before its delivery was settled, so every attempt
    // made so far is in the channel: forget them, only what follows the replay counts.
    while handled_rx.try_recv().is_ok() {}
    let (replayed, kept) = inspect_and_replay(ls.publisher.as_ref(), letters, &options).await?;

    // Every replayed payment reaches the handler again: p-2 is charged now, p-3 is declined
    // again (and dead-lettered again).
    let mut handled_after_replay = BTreeSet::new();
    let mut seen_again = BTreeSet::new();
    while seen_again != replayed {
        let handled = match tokio::time::timeout(WAIT, handled_rx.recv()).await {
            Ok(Some(h)) => h,
            _ => {
                return Err(format!("replayed {replayed:?} not all handled within {WAIT:?}").into())
            }
        };
        if !replayed.contains(&handled.payment_id) || seen_again.contains(&handled.payment_id) {
            continue;
        }
        if handled.had_dead_letter_headers {
            return Err(
                format!("{} came back with dead-letter headers", handled.payment_id).into(),
            );
        }
        seen_again.insert(handled.payment_id.clone());
        if handled.ok {
            handled_after_replay.insert(handled.payment_id);
        }
    }

    // What is left in the dead-letter queue: the kept ones and replays that failed again.
    let dead_at_end: BTreeSet<String> = kept
        .iter()
        .chain(seen_again.difference(&handled_after_replay))
        .cloned()
        .collect();
    let mut left = read_letters(&mut dlq, Some(dead_at_end.len()), WAIT, max).await?;
    let labels: BTreeSet<String> = left.iter().map(|l| l.label.clone()).collect();
    if labels != dead_at_end {
        return Err(format!("dead-letter queue holds {labels:?}, expected {dead_at_end:?}").into());
    }
    println!("still in dlq.{name}: {labels:?}");
    if options.keep {
        for letter in left.drain(..) {
            letter.delivery.nack(None).await?;
        }
        println!("kept; replay later with: dlq_replay --existing --subscription {name} --all");
    } else {
        // Demo cleanup: a declined card will not go through by replaying it; discard.
        for letter in left.drain(..) {
            letter.delivery.ack().await?;
        }
        println!("demo cleanup: discarded {labels:?}");
    }

    let stats = consumer.shutdown(Duration::from_secs(10)).await;
    println!(
        "payments consumer: received={} acked={} retried={} dead_lettered={}",
        stats.received, stats.acked, stats.retried, stats.dead_lettered
    );
    if replayed.contains("p-2") && !handled_after_replay.contains("p-2") {
        return Err("p-2 was replayed but not charged".into());
    }
    Ok(Report {
        dead_lettered,
        replayed,
        handled_after_replay,
        dead_at_end,
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let options = Options::parse(std::env::args().skip(1))?;
    run(&longshore::Config::from_env(), &options).await?;
    Ok(())
}
