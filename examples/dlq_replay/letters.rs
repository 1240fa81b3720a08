//! Dead letters: reading them, listing them, and replaying the chosen ones to the topic they
//! were first published to.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use longshore::{
    Codec, Delivery, DeliveryStream, JsonCodec, Publisher, HEADER_DLQ_AT, HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_REASON, HEADER_DLQ_SUBSCRIPTION, HEADER_DLQ_TOPIC,
};

use super::{BoxError, Options, WAIT};

/// Headers a dead letter carries that the replayed message must not.
pub const DEAD_LETTER_HEADERS: [&str; 5] = [
    HEADER_DLQ_REASON,
    HEADER_DLQ_TOPIC,
    HEADER_DLQ_SUBSCRIPTION,
    HEADER_DLQ_ATTEMPTS,
    HEADER_DLQ_AT,
];

/// One dead letter, read and not yet settled.
pub struct Letter {
    pub delivery: Delivery,
    pub event_type: String,
    /// `payment_id` for the demo's events, else the message id.
    pub label: String,
    pub reason: String,
    pub original_topic: Option<String>,
    pub attempts: String,
}

impl Letter {
    fn new(delivery: Delivery) -> Letter {
        let h = &delivery.message().headers;
        let header = |name: &str| h.get(name).cloned();
        let event = JsonCodec.decode(delivery.message()).ok();
        let label = event
            .as_ref()
            .and_then(|e| e.data.get("payment_id"))
            .and_then(|v| v.as_str())
            .map_or_else(|| delivery.message().id.clone(), str::to_string);
        Letter {
            event_type: event.map_or_else(|| "(undecodable)".to_string(), |e| e.event_type),
            label,
            reason: header(HEADER_DLQ_REASON).unwrap_or_default(),
            original_topic: header(HEADER_DLQ_TOPIC),
            attempts: header(HEADER_DLQ_ATTEMPTS).unwrap_or_else(|| "?".to_string()),
            delivery,
        }
    }

    pub fn text(&self) -> String {
        format!(
            "{} {} {} {} {}",
            self.delivery.message().id,
            self.event_type,
            self.reason,
            self.original_topic.as_deref().unwrap_or(""),
            String::from_utf8_lossy(&self.delivery.message().payload)
        )
    }

    pub fn print(&self) {
        println!(
            "  {} id={} type={} topic={} attempts={} reason={:?}",
            self.label,
            self.delivery.message().id,
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
    let mut message = letter.delivery.message().clone();
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
pub async fn read_letters(
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
pub async fn inspect_and_replay(
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
        let chosen = options.chooses(&letter.text());
        if !chosen || options.dry_run {
            if chosen {
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
