//! Raw async-nats JetStream: the adapter's subjects and headers (`Nats-Msg-Id`, the message's
//! headers, `Longshore-Key`), every publish awaiting its PubAck, a pull consumer on the
//! subscription's durable with one ack per message.

use std::future::IntoFuture;

use async_nats::jetstream::{self, consumer, message::PublishMessage as Publish};
use async_nats::HeaderMap;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use longshore_core::{Message, Subscription};

use super::{in_window, Consume, ConsumerTask, RawClient};
use crate::measure::{parse_stamp, SENT_HEADER};

/// PubAcks in flight at once in [`RawClient::publish_best`].
const ACK_WINDOW: usize = 1_024;

/// Raw async-nats on its own connection.
pub struct RawNats {
    js: jetstream::Context,
    stream: String,
    prefix: String,
}

impl RawNats {
    pub async fn connect(url: &str, stream: &str, prefix: &str) -> crate::Result<Self> {
        let client = async_nats::connect(url).await?;
        Ok(RawNats {
            js: jetstream::new(client),
            stream: stream.to_string(),
            prefix: prefix.to_string(),
        })
    }

    fn build(&self, m: &Message) -> Publish {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", m.id.as_str());
        for (k, v) in &m.headers {
            headers.insert(k.as_str(), v.as_str());
        }
        if let Some(key) = &m.key {
            headers.insert("Longshore-Key", key.as_str());
        }
        Publish::build().payload(m.payload.clone()).headers(headers)
    }

    async fn send(
        &self,
        topic: &str,
        m: &Message,
    ) -> crate::Result<jetstream::context::PublishAckFuture> {
        Ok(self
            .js
            .send_publish(format!("{}.{topic}", self.prefix), self.build(m))
            .await?)
    }
}

#[async_trait]
impl RawClient for RawNats {
    async fn publish(&self, topic: &str, m: &Message) -> crate::Result<()> {
        self.send(topic, m).await?.await?;
        Ok(())
    }

    async fn publish_batch(&self, topic: &str, ms: &[Message]) -> crate::Result<()> {
        let mut acks = Vec::with_capacity(ms.len());
        for m in ms {
            acks.push(self.send(topic, m).await?);
        }
        for a in futures::future::join_all(acks.into_iter().map(IntoFuture::into_future)).await {
            a?;
        }
        Ok(())
    }

    /// async-nats's recommended pipelining: up to [`ACK_WINDOW`] PubAck futures in flight.
    async fn publish_best(&self, topic: &str, ms: &[Message], most: usize) -> crate::Result<()> {
        in_window(ms, ACK_WINDOW.min(most).max(1), |m| async move {
            let ack = self.send(topic, m).await?;
            Ok(async move {
                ack.into_future().await?;
                Ok(())
            })
        })
        .await
    }

    async fn start_consumer(&self, c: Consume<'_>) -> crate::Result<ConsumerTask> {
        let stream = self.js.get_stream(&self.stream).await?;
        let durable: consumer::PullConsumer = stream.get_consumer(&c.sub.name).await?;
        let messages = durable
            .stream()
            .max_messages_per_batch(c.prefetch)
            .messages()
            .await?;
        let (n, concurrency, rec) = (c.n, c.concurrency, c.rec);
        Ok(tokio::spawn(async move {
            messages
                .take(n)
                .map_err(crate::BoxError::from)
                .try_for_each_concurrent(concurrency, |m| {
                    let rec = rec.clone();
                    async move {
                        let stamp = m
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(SENT_HEADER))
                            .map(|v| v.as_str());
                        rec.handle_raw(&m.payload, parse_stamp(stamp));
                        m.ack().await?;
                        Ok(())
                    }
                })
                .await
        }))
    }

    async fn cleanup(&self, sub: &Subscription) -> crate::Result<()> {
        let stream = self.js.get_stream(&self.stream).await?;
        stream.delete_consumer(&sub.name).await?;
        Ok(())
    }
}
