//! The self-contained demo: a payments consumer dead-letters two payments, the provider
//! recovers, the chosen dead letters are replayed and handled, the rest stay dead.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use longshore::prelude::*;
use longshore::{ConsumerHandle, DeliveryStream, Longshore};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::letters::{inspect_and_replay, read_letters, Letter, DEAD_LETTER_HEADERS};
use super::{BoxError, Options, Report, WAIT};

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

/// What the payments handler did with one delivery.
#[derive(Debug)]
struct Handled {
    payment_id: String,
    ok: bool,
    had_dead_letter_headers: bool,
}

/// Runs the demo on a fresh payments subscription (or `options.subscription`).
pub async fn demo(ls: &Longshore, options: &Options, max: usize) -> Result<Report, BoxError> {
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
    let (consumer, mut handled_rx) = start_payments(ls, &name, &provider_up).await?;
    publish_payments(ls, &topic).await?;

    // p-1 is charged; p-2 fails 3 times then is dead-lettered; p-3 is dead-lettered at once.
    let mut dlq = ls.subscriber.subscribe(&dlq_sub).await?;
    let letters = read_letters(&mut dlq, Some(2), WAIT, max).await?;
    let dead_lettered = check_dead_letters(&letters, &topic)?;

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
    let (handled_after_replay, seen_again) = handled_again(&mut handled_rx, &replayed).await?;

    // What is left in the dead-letter queue: the kept ones and replays that failed again.
    let dead_at_end: BTreeSet<String> = kept
        .iter()
        .chain(seen_again.difference(&handled_after_replay))
        .cloned()
        .collect();
    settle_left(&mut dlq, &dead_at_end, &name, options.keep, max).await?;

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

/// Starts the payments consumer of `name`: an expired card is declined at once (permanent),
/// the slowpay provider times out (transient) until `provider_up`. Every attempt is reported
/// on the returned channel.
async fn start_payments(
    ls: &Longshore,
    name: &str,
    provider_up: &Arc<AtomicBool>,
) -> Result<(ConsumerHandle, mpsc::UnboundedReceiver<Handled>), BoxError> {
    let (handled_tx, handled_rx) = mpsc::unbounded_channel::<Handled>();
    let up = provider_up.clone();
    let consumer = Consumer::new(
        ls.subscriber.clone(),
        Subscription::new(name, [format!("{name}.*")]),
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
    Ok((consumer, handled_rx))
}

/// Publishes p-1 (goes through), p-2 (its provider is down) and p-3 (expired card) to `topic`.
async fn publish_payments(ls: &Longshore, topic: &str) -> Result<(), BoxError> {
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
        publisher.publish_to(topic, &event).await?;
    }
    println!("published p-1 (ok), p-2 (provider down), p-3 (expired card) to {topic}");
    Ok(())
}

/// Checks the dead letters are p-2 and p-3 with the reason, attempts and original topic
/// they should carry; returns their labels.
fn check_dead_letters(letters: &[Letter], topic: &str) -> Result<BTreeSet<String>, BoxError> {
    let dead_lettered: BTreeSet<String> = letters.iter().map(|l| l.label.clone()).collect();
    let expected_dead = BTreeSet::from(["p-2".to_string(), "p-3".to_string()]);
    if dead_lettered != expected_dead {
        return Err(format!("dead letters {dead_lettered:?}, expected {expected_dead:?}").into());
    }
    for letter in letters {
        let (reason_ok, attempts_ok) = match letter.label.as_str() {
            "p-2" => (letter.reason.contains("timeout"), letter.attempts == "3"),
            _ => (letter.reason.contains("declined"), letter.attempts == "1"),
        };
        if !reason_ok || !attempts_ok || letter.original_topic.as_deref() != Some(topic) {
            letter.print();
            return Err(format!("dead letter {} has the wrong headers", letter.label).into());
        }
    }
    Ok(dead_lettered)
}

/// Waits until every replayed payment reached the handler again (p-2 is charged now, p-3 is
/// declined again and dead-lettered again), without the dead-letter headers. Returns the
/// payments handled successfully and all seen again.
async fn handled_again(
    handled_rx: &mut mpsc::UnboundedReceiver<Handled>,
    replayed: &BTreeSet<String>,
) -> Result<(BTreeSet<String>, BTreeSet<String>), BoxError> {
    let mut handled_after_replay = BTreeSet::new();
    let mut seen_again = BTreeSet::new();
    while seen_again != *replayed {
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
    Ok((handled_after_replay, seen_again))
}

/// Reads what is left in `dlq.<name>`, which must be `dead_at_end`, and leaves it there
/// (`keep`) or discards it.
async fn settle_left(
    dlq: &mut DeliveryStream,
    dead_at_end: &BTreeSet<String>,
    name: &str,
    keep: bool,
    max: usize,
) -> Result<(), BoxError> {
    let mut left = read_letters(dlq, Some(dead_at_end.len()), WAIT, max).await?;
    let labels: BTreeSet<String> = left.iter().map(|l| l.label.clone()).collect();
    if labels != *dead_at_end {
        return Err(format!("dead-letter queue holds {labels:?}, expected {dead_at_end:?}").into());
    }
    println!("still in dlq.{name}: {labels:?}");
    if keep {
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
    Ok(())
}
