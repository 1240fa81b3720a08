//! The acker: an ack settles the offset in the consumer's group state and frees a prefetch
//! slot (waking the consumer thread only now and then, [`Slots`]); a nack goes back to the
//! thread over its command channel; dead letters and the delay copies of delayed nacks
//! ([`crate::delay`]) are published (acks=all) before the offset is settled.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use longshore_core::{dead_letter_message, Acker, DeadLetter, Error, Message};
use tokio::sync::OnceCell;

use crate::client::{lock, Client};
use crate::command::{Cmd, Pending, Slots};
use crate::delay::delayed_copy;
use crate::group_state::GroupState;
use crate::mapping::TopicMap;
use crate::publisher::KafkaPublisher;

/// What every acker of one consumer shares.
pub(crate) struct AckCtx {
    /// The consumer thread's command channel.
    pub cmd: mpsc::Sender<Cmd>,
    /// The consumer's offsets, settled here.
    pub group: Arc<Mutex<GroupState>>,
    /// The consumer's prefetch slots.
    pub slots: Arc<Slots>,
    /// The subscription's name (its dead letters go to `dlq.<name>`, its delayed nacks to
    /// `longshore.delay.<name>`).
    pub subscription: String,
    /// The broker's shared state, for the publisher.
    pub client: Arc<Client>,
    /// The publisher of dead letters and delay copies, shared by the subscriber's consumers
    /// and made on first use.
    pub producer: Arc<OnceCell<KafkaPublisher>>,
}

impl AckCtx {
    /// The shared publisher, made on first use.
    async fn producer(&self) -> &KafkaPublisher {
        let client = self.client.clone();
        self.producer
            .get_or_init(|| async move { KafkaPublisher::new(client) })
            .await
    }
}

/// Settles one delivery: ack and dead-letter tell the consumer thread the offset is done,
/// nack (or dropping it unsettled) hands the message back for redelivery.
pub(crate) struct KafkaAcker {
    ctx: Arc<AckCtx>,
    /// `Some` until settled; dropping it unsettled nacks.
    pending: Option<Pending>,
}

impl KafkaAcker {
    /// The acker of the delivery `pending`.
    pub fn new(ctx: Arc<AckCtx>, pending: Pending) -> Self {
        KafkaAcker {
            ctx,
            pending: Some(pending),
        }
    }

    fn settle(&mut self) -> Result<(), Error> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let settled = lock(&self.ctx.group).settle(p.tp, p.epoch, p.offset);
        self.ctx.slots.free_and_wake(&self.ctx.cmd);
        settled
    }
}

impl Drop for KafkaAcker {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            let _ = self.ctx.cmd.send(Cmd::Nack {
                pending,
                delay: None,
            });
        }
    }
}

#[async_trait]
impl Acker for KafkaAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        self.settle()
    }

    /// Without a delay: a local redelivery. With one: the message is copied to the delay
    /// topic and the original settled once the copy is stored, so the wait survives this
    /// consumer ([`crate::delay`]).
    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let Some(delay) = delay.filter(|d| !d.is_zero()) else {
            let Some(pending) = self.pending.take() else {
                return Ok(());
            };
            // A closed consumer cannot redeliver, but the offset was never stored: the next
            // consumer of the subscription gets the message again.
            let _ = self.ctx.cmd.send(Cmd::Nack {
                pending,
                delay: None,
            });
            return Ok(());
        };
        let Some(pending) = self.pending.as_ref() else {
            return Ok(());
        };
        let (message, topic) = pending.packed.unpack();
        let copy = delayed_copy(message, pending.attempt, delay, SystemTime::now());
        let ctx = self.ctx.clone();
        let stored = match TopicMap::delay_topic(&ctx.subscription) {
            Ok(kafka_topic) => {
                ctx.producer()
                    .await
                    .publish_copy(&kafka_topic, &topic, &copy)
                    .await
            }
            Err(e) => Err(e),
        };
        match stored {
            // The copy is stored: the original is done, its offset may be committed.
            Ok(()) => self.settle(),
            Err(e) => {
                // Nothing is lost: the original stays unsettled and waits in this consumer,
                // as before delay topics (not durable, but the delay is kept).
                if let Some(pending) = self.pending.take() {
                    let _ = self.ctx.cmd.send(Cmd::Nack {
                        pending,
                        delay: Some(delay),
                    });
                }
                Err(e)
            }
        }
    }

    /// The broker keeps the message until it is settled: nothing to hold.
    fn hold(&mut self, _message: Message) {}

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let ctx = self.ctx.clone();
        let kafka_topic = TopicMap::dead_letter_topic(&ctx.subscription)?;
        let letter = dead_letter_message(message, topic, &ctx.subscription, &dead);
        // Publish first, settle after: if the dead-letter topic refuses, dropping `self`
        // nacks and the message is redelivered.
        ctx.producer()
            .await
            .publish_letter(&kafka_topic, letter)
            .await?;
        self.settle()
    }
}
