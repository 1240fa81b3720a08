//! The acker: settlements go back to the consumer thread over its command channel; dead
//! letters are published (acks=all) before the offset is settled.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use longshore_core::{dead_letter_message, Acker, DeadLetter, Error, Message};
use tokio::sync::OnceCell;

use crate::client::Client;
use crate::command::{Cmd, Pending};
use crate::mapping::TopicMap;
use crate::publisher::KafkaPublisher;

/// What every acker of one consumer shares.
pub(crate) struct AckCtx {
    /// The consumer thread's command channel.
    pub cmd: mpsc::Sender<Cmd>,
    /// The subscription's name (its dead letters go to `dlq.<name>`).
    pub subscription: String,
    /// The broker's shared state, for the dead-letter publisher.
    pub client: Arc<Client>,
    /// The dead-letter publisher, shared by the subscriber's consumers and made on first use.
    pub dlq: Arc<OnceCell<KafkaPublisher>>,
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
        self.ctx
            .cmd
            .send(Cmd::Settle {
                tp: p.tp,
                epoch: p.epoch,
                offset: p.offset,
            })
            .map_err(|_| Error::Closed("kafka consumer"))
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

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        // A closed consumer cannot redeliver, but the offset was never stored: the next
        // consumer of the subscription gets the message again.
        let _ = self.ctx.cmd.send(Cmd::Nack { pending, delay });
        Ok(())
    }

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let ctx = self.ctx.clone();
        let kafka_topic = TopicMap::dead_letter_topic(&ctx.subscription)?;
        let letter = dead_letter_message(message, topic, &ctx.subscription, &dead);
        let client = ctx.client.clone();
        let dlq = ctx
            .dlq
            .get_or_init(|| async move { KafkaPublisher::new(client) })
            .await;
        // Publish first, settle after: if the dead-letter topic refuses, dropping `self`
        // nacks and the message is redelivered.
        dlq.publish_letter(&kafka_topic, letter).await?;
        self.settle()
    }
}
