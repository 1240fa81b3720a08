//! Settling one delivery: ack, nack (with an in-process delay), dead letter to `dlx`, or
//! requeue when dropped unsettled.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use longshore_core::{
    async_trait, dead_letter_message, dead_letter_topic, Acker, DeadLetter, Error, Message,
};

use crate::config::DEAD_LETTER_EXCHANGE;
use crate::confirm::{ConfirmChannel, Route};
use crate::error::map_lapin;
use crate::mapping::properties;
use crate::BACKEND;

/// A nack that puts the delivery back in its queue.
pub(crate) fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        multiple: false,
        requeue: true,
    }
}

/// Settles one delivery. Dropped unsettled, it nacks (requeue) in a spawned task.
pub(crate) struct RabbitAcker {
    acker: Option<lapin::Acker>,
    /// Keeps the consumer's channel open until the delivery is settled, even after the
    /// stream is dropped.
    channel: Channel,
    dead_letters: Arc<ConfirmChannel>,
    queue: String,
    /// Longest wait for lapin to take a settlement (see [`bounded`]).
    timeout: Duration,
}

impl RabbitAcker {
    /// The acker of a delivery received on `channel` from `queue`; dead letters go out on
    /// `dead_letters`; a settlement lapin has not taken within `timeout` fails.
    pub(crate) fn new(
        acker: lapin::Acker,
        channel: Channel,
        dead_letters: Arc<ConfirmChannel>,
        queue: String,
        timeout: Duration,
    ) -> Self {
        RabbitAcker {
            acker: Some(acker),
            channel,
            dead_letters,
            queue,
            timeout,
        }
    }
}

/// Runs one lapin settlement within `timeout`. lapin may leave it unanswered on a connection
/// the broker closed cleanly (lapin issue #409); the consumer would then wait forever. The
/// broker redelivers an unsettled delivery once its channel is gone, so a timeout is a
/// retryable error, never a loss.
async fn bounded(
    what: &'static str,
    timeout: Duration,
    settle: impl std::future::Future<Output = Result<bool, lapin::Error>>,
) -> Result<(), Error> {
    match tokio::time::timeout(timeout, settle).await {
        Ok(result) => settled(what, result),
        Err(_) => Err(Error::Timeout {
            operation: what,
            after: timeout,
        }),
    }
}

fn settled(what: &str, result: Result<bool, lapin::Error>) -> Result<(), Error> {
    match result {
        Ok(true) => Ok(()),
        // lapin reports a delivery of a closed channel as unusable: the broker requeues it.
        Ok(false) => Err(Error::connection(
            BACKEND,
            format!("{what}: the channel closed before the delivery was settled; the broker will redeliver it"),
        )),
        Err(e) => Err(map_lapin(what, e)),
    }
}

impl Drop for RabbitAcker {
    fn drop(&mut self) {
        let Some(acker) = self.acker.take() else {
            return;
        };
        if !acker.usable() {
            return;
        }
        let channel = self.channel.clone();
        let timeout = self.timeout;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = bounded("nack", timeout, acker.nack(requeue())).await;
                drop(channel);
            });
        }
    }
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), Error> {
        match self.acker.take() {
            Some(acker) => {
                bounded("ack", self.timeout, acker.ack(BasicAckOptions::default())).await
            }
            None => Ok(()),
        }
    }

    async fn nack(mut self: Box<Self>, delay: Option<Duration>) -> Result<(), Error> {
        let Some(acker) = self.acker.take() else {
            return Ok(());
        };
        match delay {
            None | Some(Duration::ZERO) => {
                bounded("nack", self.timeout, acker.nack(requeue())).await
            }
            Some(delay) => {
                // RabbitMQ has no per-message delay without a plugin: the delivery stays
                // unacknowledged (holding its prefetch slot) until the delay has passed.
                let channel = self.channel.clone();
                let timeout = self.timeout;
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = bounded("nack", timeout, acker.nack(requeue())).await;
                    drop(channel);
                });
                Ok(())
            }
        }
    }

    async fn dead_letter(
        mut self: Box<Self>,
        message: Message,
        topic: &str,
        dead: DeadLetter,
    ) -> Result<(), Error> {
        let dlq = dead_letter_topic(&self.queue);
        let letter = dead_letter_message(message, topic, &self.queue, &dead);
        let props = properties(&letter)?;
        let route = Route {
            exchange: DEAD_LETTER_EXCHANGE,
            routing_key: &dlq,
            mandatory: true,
        };
        // Publish first, settle after: if the dead letter is not confirmed, dropping `self`
        // requeues the original.
        self.dead_letters
            .publish_confirmed(route, &letter.payload, &props)
            .await?;
        self.ack().await
    }
}
