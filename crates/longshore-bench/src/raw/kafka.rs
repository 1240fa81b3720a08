//! Raw rdkafka: the adapter's producer settings (`acks=all`, idempotence, murmur2, `linger.ms=5`)
//! and records (Kafka topic = the topic's first word, key, `longshore-id`/`longshore-topic` and
//! the message's headers); a consumer with the adapter's at-least-once pattern (offsets stored
//! after each handled message, auto-committed).

use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use longshore_core::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::{in_window, Consume, ConsumerTask, RawClient};
use crate::measure::{parse_stamp, SENT_HEADER};

/// Delivery reports awaited at once in [`RawClient::publish_best`] (librdkafka queues up to
/// 100,000 messages by default).
const REPORT_WINDOW: usize = 10_000;

/// Raw rdkafka with a producer of its own.
pub struct RawKafka {
    brokers: String,
    producer: FutureProducer,
}

/// The Kafka topic a longshore topic maps to (its first word).
fn kafka_topic(topic: &str) -> &str {
    topic.split('.').next().unwrap_or(topic)
}

impl RawKafka {
    pub fn connect(brokers: &str) -> crate::Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "raw-bench")
            .set("message.max.bytes", "1048588")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5")
            .set("message.timeout.ms", "30000")
            .set("partitioner", "murmur2_random")
            .set("sticky.partitioning.linger.ms", "0")
            .set("linger.ms", "5")
            .create()?;
        Ok(RawKafka {
            brokers: brokers.to_string(),
            producer,
        })
    }

    fn enqueue(
        &self,
        topic: &str,
        m: &Message,
    ) -> crate::Result<rdkafka::producer::DeliveryFuture> {
        let mut h = OwnedHeaders::new_with_capacity(2 + m.headers.len())
            .insert(Header {
                key: "longshore-id",
                value: Some(m.id.as_str()),
            })
            .insert(Header {
                key: "longshore-topic",
                value: Some(topic),
            });
        for (k, v) in &m.headers {
            h = h.insert(Header {
                key: k.as_str(),
                value: Some(v.as_str()),
            });
        }
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(kafka_topic(topic))
            .payload(&m.payload[..])
            .headers(h);
        if let Some(k) = &m.key {
            r = r.key(k.as_bytes());
        }
        self.producer.send_result(r).map_err(|(e, _)| e.into())
    }
}

async fn delivered(f: rdkafka::producer::DeliveryFuture) -> crate::Result<()> {
    match f.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err("delivery report dropped".into()),
    }
}

#[async_trait]
impl RawClient for RawKafka {
    async fn publish(&self, topic: &str, m: &Message) -> crate::Result<()> {
        delivered(self.enqueue(topic, m)?).await
    }

    async fn publish_batch(&self, topic: &str, ms: &[Message]) -> crate::Result<()> {
        let mut reports = Vec::with_capacity(ms.len());
        for m in ms {
            reports.push(self.enqueue(topic, m)?);
        }
        for r in futures::future::join_all(reports.into_iter().map(delivered)).await {
            r?;
        }
        Ok(())
    }

    /// rdkafka's recommended pipelining: up to [`REPORT_WINDOW`] sends in flight, batched by
    /// librdkafka (`linger.ms=5`, its default batch size), under its queue limit.
    async fn publish_best(&self, topic: &str, ms: &[Message], most: usize) -> crate::Result<()> {
        in_window(ms, REPORT_WINDOW.min(most).max(1), |m| {
            let report = self.enqueue(topic, m);
            async move { Ok(delivered(report?)) }
        })
        .await
    }

    async fn start_consumer(&self, c: Consume<'_>) -> crate::Result<ConsumerTask> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &c.sub.name)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .create()?;
        // Assign every partition (no group join to wait for: the adapter's `subscribe` also
        // returns only once partitions are assigned, so neither side's timing includes it).
        let ktopic = kafka_topic(c.topic).to_string();
        let consumer = tokio::task::spawn_blocking(move || -> crate::Result<StreamConsumer> {
            let md = consumer.fetch_metadata(Some(&ktopic), Duration::from_secs(10))?;
            let mut tpl = TopicPartitionList::new();
            for t in md.topics() {
                for p in t.partitions() {
                    tpl.add_partition_offset(&ktopic, p.id(), Offset::Beginning)?;
                }
            }
            if tpl.count() == 0 {
                return Err(format!("kafka topic {ktopic} has no partitions").into());
            }
            consumer.assign(&tpl)?;
            Ok(consumer)
        })
        .await??;
        let (n, concurrency, rec) = (c.n, c.concurrency, c.rec);
        Ok(tokio::spawn(async move {
            let result = consumer
                .stream()
                .take(n)
                .map_err(crate::BoxError::from)
                .try_for_each_concurrent(concurrency, |m| {
                    let rec = &rec;
                    let consumer = &consumer;
                    async move {
                        // What a handler looks at: the headers the adapter decodes too.
                        let mut headers = std::collections::BTreeMap::new();
                        if let Some(hs) = m.headers() {
                            for h in hs.iter() {
                                headers.insert(
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                );
                            }
                        }
                        let stamp = parse_stamp(headers.get(SENT_HEADER).map(String::as_str));
                        rec.handle_raw(m.payload().unwrap_or_default(), stamp);
                        consumer.store_offset_from_message(&m)?;
                        Ok(())
                    }
                })
                .await;
            // librdkafka's close blocks: off the runtime.
            let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
            result
        }))
    }
}
