//! Dead-letter operations on any backend: list, show, replay and purge the letters of
//! `dlq.<subscription>`, through the [`Publisher`] and [`Subscriber`] ports only.
//!
//! Each operation is one pass: it reads as many letters as the backend counts waiting
//! ([`Subscriber::lag`]), holding them unacknowledged, acts on those the
//! [`DeadLetterFilter`] chooses, and gives the others back. A replayed letter is removed only
//! after its republish was confirmed, so a replay killed at any point loses nothing (a letter
//! republished but not yet removed is replayed twice; consumers with an inbox drop the copy).
//!
//! Backend notes: on Kafka a pass that removes letters appends the kept ones again at the tail
//! of `dlq.<subscription>` (a log cannot drop a record from its middle); on NATS every pass
//! counts as one delivery of each letter read, and a letter delivered more than the
//! connection's `max_deliver` times moves on to `dlq.dlq.<subscription>`.

mod pass;
mod record;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::publisher::Publisher;
use crate::subscriber::{Subscriber, Subscription};
use crate::topic::validate_topic;

use self::pass::Pass;
pub use self::record::{DeadLetterFilter, DeadLetterRecord, DEAD_LETTER_HEADERS};

/// Most chosen letters republished in one batch (confirms pipelined, then each removed).
const REPLAY_BATCH: usize = 256;

/// A chosen letter waiting for its batch.
struct Chosen {
    id: String,
    topic: String,
    message: crate::message::Message,
    delivery: crate::subscriber::Delivery,
}

/// Most letters one pass reads by default.
pub const DEFAULT_MAX_LETTERS: usize = 10_000;

/// The dead letters of one subscription: `dlq.<subscription>` on the same backend.
#[derive(Clone)]
pub struct DeadLetters {
    publisher: Arc<dyn Publisher>,
    subscriber: Arc<dyn Subscriber>,
    subscription: String,
    max: usize,
    wait: Duration,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("subscription", &self.subscription)
            .field("max", &self.max)
            .finish()
    }
}

/// What happened to one letter during a replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplayStep {
    /// Republished to `topic` (confirmed), then removed from the dead-letter queue.
    Replayed {
        /// The message id.
        id: String,
        /// Where it went.
        topic: String,
    },
    /// Kept: it names no original topic and no target was given.
    NoTopic {
        /// The message id.
        id: String,
    },
    /// Kept: the republish failed.
    Failed {
        /// The message id.
        id: String,
        /// Why.
        error: String,
    },
}

/// The outcome of [`DeadLetters::replay`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Ids republished and removed, in the order replayed.
    pub replayed: Vec<String>,
    /// Chosen letters kept because they name no original topic.
    pub no_topic: Vec<String>,
    /// Chosen letters kept because their republish failed: (id, error).
    pub failed: Vec<(String, String)>,
    /// Letters read and not chosen by the filter (left in place).
    pub not_chosen: usize,
}

impl DeadLetters {
    /// The dead letters of `subscription`, read and replayed through these ports.
    pub fn new(
        publisher: Arc<dyn Publisher>,
        subscriber: Arc<dyn Subscriber>,
        subscription: impl Into<String>,
    ) -> Self {
        DeadLetters {
            publisher,
            subscriber,
            subscription: subscription.into(),
            max: DEFAULT_MAX_LETTERS,
            wait: Duration::from_secs(15),
        }
    }

    /// Reads at most `max` letters per operation (default [`DEFAULT_MAX_LETTERS`], at most
    /// 65,535: every letter kept is held unacknowledged until the pass ends).
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max.clamp(1, usize::from(u16::MAX));
        self
    }

    /// How long to wait for a letter the backend counted but has not delivered yet
    /// (default 15 s; a Kafka consumer group takes seconds to join).
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The subscription whose dead letters these are.
    pub fn subscription(&self) -> &str {
        &self.subscription
    }

    /// The dead-letter queue's name, `dlq.<subscription>`.
    pub fn queue(&self) -> String {
        crate::subscriber::dead_letter_topic(&self.subscription)
    }

    async fn open(&self) -> Result<Pass<'_>, Error> {
        let dlq = Subscription::dead_letters_of(&self.subscription)
            .with_prefetch(u16::try_from(self.max).unwrap_or(u16::MAX));
        dlq.validate()?;
        // An unknown subscription is an error, not an empty list; a log-based backend
        // (Kafka) knows only the subscriptions it opened itself, so there it is not asked.
        if !self.subscriber.capabilities().replay {
            self.subscriber.lag(&self.subscription).await?;
        }
        Pass::open(
            self.subscriber.as_ref(),
            self.publisher.as_ref(),
            dlq,
            self.max,
            self.wait,
        )
        .await
    }

    /// The letters `filter` chooses, in the order the backend delivered them; every letter
    /// stays in the dead-letter queue.
    pub async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetterRecord>, Error> {
        let mut pass = self.open().await?;
        let mut chosen = Vec::new();
        while let Some((record, delivery)) = pass.next().await? {
            if filter.matches(&record) {
                chosen.push(record);
            }
            pass.keep(delivery);
        }
        pass.finish().await?;
        Ok(chosen)
    }

    /// The letter with message id `id`, if it is in the dead-letter queue (the first one
    /// when a message was dead-lettered twice).
    pub async fn show(&self, id: &str) -> Result<Option<DeadLetterRecord>, Error> {
        let letters = self.list(&DeadLetterFilter::all().id(id)).await?;
        Ok(letters.into_iter().next())
    }

    /// Republishes each chosen letter to its original topic (or `to`), without the
    /// dead-letter headers, and removes it only once the publish was confirmed. Letters go
    /// out in batches of up to 256 per topic with their confirms pipelined.
    pub async fn replay(
        &self,
        filter: &DeadLetterFilter,
        to: Option<&str>,
    ) -> Result<ReplayReport, Error> {
        self.replay_with(filter, to, |_| {}).await
    }

    /// [`DeadLetters::replay`], calling `on_step` for each chosen letter once it was removed
    /// or kept (for progress).
    pub async fn replay_with(
        &self,
        filter: &DeadLetterFilter,
        to: Option<&str>,
        mut on_step: impl FnMut(&ReplayStep) + Send,
    ) -> Result<ReplayReport, Error> {
        if let Some(to) = to {
            validate_topic(to)?;
        }
        let mut pass = self.open().await?;
        let mut report = ReplayReport::default();
        let mut batch: Vec<Chosen> = Vec::new();
        while let Some((record, delivery)) = pass.next().await? {
            if !filter.matches(&record) {
                report.not_chosen += 1;
                pass.keep(delivery);
                continue;
            }
            let Some(topic) = to.map(str::to_string).or(record.original_topic.clone()) else {
                pass.keep(delivery);
                on_step(&ReplayStep::NoTopic {
                    id: record.id.clone(),
                });
                report.no_topic.push(record.id);
                continue;
            };
            batch.push(Chosen {
                message: record.replay_message(),
                id: record.id,
                topic,
                delivery,
            });
            if batch.len() >= REPLAY_BATCH {
                self.flush(&mut pass, &mut batch, &mut report, &mut on_step)
                    .await?;
            }
        }
        self.flush(&mut pass, &mut batch, &mut report, &mut on_step)
            .await?;
        pass.finish().await?;
        Ok(report)
    }

    /// Republishes `batch` (one pipelined batch per topic), then removes each letter whose
    /// republish was confirmed and keeps the others.
    async fn flush(
        &self,
        pass: &mut Pass<'_>,
        batch: &mut Vec<Chosen>,
        report: &mut ReplayReport,
        on_step: &mut (impl FnMut(&ReplayStep) + Send),
    ) -> Result<(), Error> {
        let chosen = std::mem::take(batch);
        let mut by_topic: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, c) in chosen.iter().enumerate() {
            by_topic.entry(c.topic.as_str()).or_default().push(i);
        }
        let mut failed: BTreeMap<usize, String> = BTreeMap::new();
        for (topic, indexes) in by_topic {
            let messages = indexes.iter().map(|&i| chosen[i].message.clone()).collect();
            if let Err(e) = self.publisher.publish_batch(topic, messages).await {
                for f in e.failed {
                    if let Some(&i) = indexes.get(f.index) {
                        failed.insert(i, f.error.to_string());
                    }
                }
            }
        }
        for (i, c) in chosen.into_iter().enumerate() {
            let step = match failed.remove(&i) {
                // Confirmed: only now is the letter removed.
                None => {
                    pass.remove(c.delivery).await?;
                    report.replayed.push(c.id.clone());
                    ReplayStep::Replayed {
                        id: c.id,
                        topic: c.topic,
                    }
                }
                Some(error) => {
                    pass.keep(c.delivery);
                    report.failed.push((c.id.clone(), error.clone()));
                    ReplayStep::Failed { id: c.id, error }
                }
            };
            on_step(&step);
        }
        Ok(())
    }

    /// Removes the letters `filter` chooses, for good. Returns their ids.
    pub async fn purge(&self, filter: &DeadLetterFilter) -> Result<Vec<String>, Error> {
        let mut pass = self.open().await?;
        let mut purged = Vec::new();
        while let Some((record, delivery)) = pass.next().await? {
            if filter.matches(&record) {
                pass.remove(delivery).await?;
                purged.push(record.id);
            } else {
                pass.keep(delivery);
            }
        }
        pass.finish().await?;
        Ok(purged)
    }
}
