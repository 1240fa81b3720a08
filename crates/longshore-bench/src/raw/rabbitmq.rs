//! Raw lapin: the adapter's wire form (persistent, message id, content type, header table,
//! `mandatory`), publisher confirms, `basic.qos` prefetch and one ack per message.

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use longshore_core::{Message, Subscription};

use super::{in_window, Consume, ConsumerTask, RawClient};
use crate::measure::{parse_stamp, SENT_HEADER};

/// Confirms in flight at once in [`RawClient::publish_best`].
const CONFIRM_WINDOW: usize = 1_024;

/// Raw lapin on its own connection.
pub struct RawRabbit {
    conn: Connection,
    publish: Channel,
    admin: Channel,
    exchange: String,
    /// Delivery mode 2 (persistent, what the adapter always sends) or 1 (transient).
    delivery_mode: u8,
}

impl RawRabbit {
    pub async fn connect(url: &str, exchange: &str) -> crate::Result<Self> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let publish = conn.create_channel().await?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let admin = conn.create_channel().await?;
        Ok(RawRabbit {
            conn,
            publish,
            admin,
            exchange: exchange.to_string(),
            delivery_mode: 2,
        })
    }

    /// The same client sending transient messages (delivery mode 1), to show what broker
    /// persistence costs; the adapter has no such mode.
    pub async fn transient(url: &str, exchange: &str) -> crate::Result<Self> {
        let mut raw = Self::connect(url, exchange).await?;
        raw.delivery_mode = 1;
        Ok(raw)
    }

    fn properties(&self, m: &Message) -> BasicProperties {
        let mut headers = FieldTable::default();
        let mut props = BasicProperties::default()
            .with_delivery_mode(self.delivery_mode)
            .with_message_id(ShortString::from(m.id.as_str()));
        for (k, v) in &m.headers {
            if k == "content-type" {
                props = props.with_content_type(ShortString::from(v.as_str()));
            } else {
                headers.insert(
                    ShortString::from(k.as_str()),
                    AMQPValue::LongString(LongString::from(v.as_bytes())),
                );
            }
        }
        if let Some(key) = &m.key {
            headers.insert(
                ShortString::from("longshore-key"),
                AMQPValue::LongString(LongString::from(key.as_bytes())),
            );
        }
        props.with_headers(headers)
    }

    async fn send(&self, topic: &str, m: &Message) -> crate::Result<lapin::PublisherConfirm> {
        Ok(self
            .publish
            .basic_publish(
                self.exchange.as_str().into(),
                topic.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &m.payload,
                self.properties(m),
            )
            .await?)
    }
}

fn confirmed(c: Confirmation) -> crate::Result<()> {
    match c {
        Confirmation::Ack(None) => Ok(()),
        other => Err(format!("not confirmed: {other:?}").into()),
    }
}

#[async_trait]
impl RawClient for RawRabbit {
    async fn publish(&self, topic: &str, m: &Message) -> crate::Result<()> {
        confirmed(self.send(topic, m).await?.await?)
    }

    async fn publish_batch(&self, topic: &str, ms: &[Message]) -> crate::Result<()> {
        let mut confirms = Vec::with_capacity(ms.len());
        for m in ms {
            confirms.push(self.send(topic, m).await?);
        }
        for c in futures::future::join_all(confirms).await {
            confirmed(c?)?;
        }
        Ok(())
    }

    /// lapin's recommended pipelining: up to [`CONFIRM_WINDOW`] confirms in flight on the one
    /// confirm channel.
    async fn publish_best(&self, topic: &str, ms: &[Message], most: usize) -> crate::Result<()> {
        in_window(ms, CONFIRM_WINDOW.min(most).max(1), |m| async move {
            let confirm = self.send(topic, m).await?;
            Ok(async move { confirmed(confirm.await?) })
        })
        .await
    }

    async fn start_consumer(&self, c: Consume<'_>) -> crate::Result<ConsumerTask> {
        let channel = self.conn.create_channel().await?;
        channel
            .basic_qos(
                u16::try_from(c.prefetch).unwrap_or(u16::MAX),
                BasicQosOptions { global: false },
            )
            .await?;
        let consumer = channel
            .basic_consume(
                c.sub.name.as_str().into(),
                crate::work::unique("raw").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (n, concurrency, rec) = (c.n, c.concurrency, c.rec);
        Ok(tokio::spawn(async move {
            let result = consumer
                .take(n)
                .map_err(crate::BoxError::from)
                .try_for_each_concurrent(concurrency, |d| {
                    let rec = rec.clone();
                    async move {
                        let stamp = d.properties.headers().as_ref().and_then(|h| {
                            match h.inner().get(&ShortString::from(SENT_HEADER)) {
                                Some(AMQPValue::LongString(s)) => {
                                    parse_stamp(std::str::from_utf8(s.as_bytes()).ok())
                                }
                                _ => None,
                            }
                        });
                        rec.handle_raw(&d.data, stamp);
                        d.acker.ack(BasicAckOptions::default()).await?;
                        Ok(())
                    }
                })
                .await;
            let _ = channel.close(200, "OK".into()).await;
            result
        }))
    }

    async fn cleanup(&self, sub: &Subscription) -> crate::Result<()> {
        for q in [sub.name.clone(), format!("dlq.{}", sub.name)] {
            self.admin
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}
