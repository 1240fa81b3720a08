//! One pass over a dead-letter queue: read what the backend counts, hold what is kept,
//! settle what is removed, and give the kept letters back at the end.

use std::time::Duration;

use futures::StreamExt;

use crate::error::Error;
use crate::publisher::Publisher;
use crate::subscriber::{Delivery, DeliveryStream, Subscriber, Subscription};

use super::record::DeadLetterRecord;

/// An open pass over `dlq.<subscription>`.
pub(super) struct Pass<'a> {
    publisher: &'a dyn Publisher,
    dlq: Subscription,
    stream: Option<DeliveryStream>,
    /// Letters read and kept, unsettled until [`Pass::finish`].
    held: Vec<Delivery>,
    /// How many letters to read: what the backend counted (at most the pass's maximum).
    target: usize,
    read: usize,
    removed: usize,
    wait: Duration,
    /// Whether the backend settles by position in a log (Kafka): there a kept letter before
    /// a removed one would hold the committed position back, and the removed one would be
    /// read again next time, so kept letters are appended again at the tail instead.
    log_based: bool,
    /// How long a kept letter is held back by the backend once given back (see
    /// [`give_back_delay`]).
    give_back: Option<Duration>,
}

/// A NATS pull consumer that is dropped leaves its pull requests open on the server until
/// they expire (`pull_expires`, 5 s by default, plus the adapter's 1 s of drain): a letter
/// given back at once would be redelivered into them and stay invisible until `ack_wait`
/// (30 s). Held back for longer than that, it goes to the next pass's consumer instead.
fn give_back_delay(backend: &str) -> Option<Duration> {
    (backend == "nats").then_some(Duration::from_secs(7))
}

impl<'a> Pass<'a> {
    /// Opens a pass over `dlq` reading at most `max` letters, waiting up to `wait` for each
    /// letter the backend counted.
    pub(super) async fn open(
        subscriber: &dyn Subscriber,
        publisher: &'a dyn Publisher,
        dlq: Subscription,
        max: usize,
        wait: Duration,
    ) -> Result<Pass<'a>, Error> {
        subscriber.ensure_subscription(&dlq).await?;
        let counted = subscriber.lag(&dlq.name).await?;
        let target = counted.map_or(max, |n| usize::try_from(n).unwrap_or(max).min(max));
        // Nothing waiting: no consumer is opened (a Kafka group join costs seconds).
        let stream = if target == 0 {
            None
        } else {
            Some(subscriber.subscribe(&dlq).await?)
        };
        let capabilities = subscriber.capabilities();
        Ok(Pass {
            publisher,
            log_based: capabilities.replay,
            give_back: give_back_delay(capabilities.backend),
            dlq,
            stream,
            held: Vec::new(),
            target,
            read: 0,
            removed: 0,
            wait,
        })
    }

    /// The next letter and its delivery, or `None` when every counted letter was read or
    /// none came within the wait (another consumer holds them, or the count was high).
    pub(super) async fn next(&mut self) -> Result<Option<(DeadLetterRecord, Delivery)>, Error> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(None);
        };
        while self.read < self.target {
            match tokio::time::timeout(self.wait, stream.next()).await {
                Err(_) => {
                    tracing::info!(dlq = %self.dlq.name, read = self.read, counted = self.target,
                        "fewer dead letters arrived than counted; the rest are held elsewhere");
                    return Ok(None);
                }
                Ok(None) => return Err(Error::Closed("dead-letter stream")),
                // A reconnect in progress: the stream goes on.
                Ok(Some(Err(e))) => {
                    tracing::warn!(error = %e, dlq = %self.dlq.name, "dead-letter stream")
                }
                Ok(Some(Ok(delivery))) => {
                    self.read += 1;
                    let record = DeadLetterRecord::from_message(delivery.message().clone());
                    return Ok(Some((record, delivery)));
                }
            }
        }
        Ok(None)
    }

    /// Leaves the letter in the dead-letter queue (settled at [`Pass::finish`]).
    pub(super) fn keep(&mut self, delivery: Delivery) {
        self.held.push(delivery);
    }

    /// Removes the letter from the dead-letter queue.
    pub(super) async fn remove(&mut self, delivery: Delivery) -> Result<(), Error> {
        delivery.ack().await?;
        self.removed += 1;
        Ok(())
    }

    /// Gives every kept letter back to the dead-letter queue and closes the pass.
    pub(super) async fn finish(mut self) -> Result<(), Error> {
        let held = std::mem::take(&mut self.held);
        if self.log_based && self.removed > 0 {
            // Append each kept letter at the tail, confirmed, before settling its old place.
            let mut first_error = None;
            for delivery in held {
                let copy = delivery.message().clone();
                match self.publisher.publish(&self.dlq.name, copy).await {
                    Ok(()) => delivery.ack().await?,
                    Err(e) => {
                        let _ = delivery.nack(None).await;
                        first_error.get_or_insert(e);
                    }
                }
            }
            self.stream = None;
            return first_error.map_or(Ok(()), Err);
        }
        // Stop receiving first, so letters given back are not delivered to this pass again.
        self.stream = None;
        for delivery in held {
            if let Err(e) = delivery.nack(self.give_back).await {
                // Unsettled, the backend gives it back anyway (after its lease or timeout).
                tracing::warn!(error = %e, dlq = %self.dlq.name, "giving a dead letter back");
            }
        }
        Ok(())
    }
}
