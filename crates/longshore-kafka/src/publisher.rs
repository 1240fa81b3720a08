//! The publisher: idempotent `acks=all` producer, one delivery report awaited per message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use longshore_core::{
    fit_dead_letter, BatchError, Capabilities, Error, FailedMessage, Message, Publisher,
};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::client::{lock, Client, LogContext};
use crate::error::map;
use crate::mapping::{HEADER_ID, HEADER_TOPIC};
use crate::BACKEND;

/// Most delivery reports a `publish_batch` keeps in flight (rdkafka's recommended pipelining;
/// the bench's raw client at its best uses the same).
const REPORT_WINDOW: usize = 10_000;

type RawProducer = FutureProducer<LogContext>;

/// Publishes to Kafka. `Ok` means the broker acknowledged the message with `acks=all`
/// (the delivery report arrived without error).
///
/// The producer is idempotent (`enable.idempotence=true`, `acks=all`, at most 5 in-flight
/// requests), so librdkafka's internal retries neither duplicate nor reorder messages within a
/// partition. Messages with the same key (the ordering key, for events the aggregate id) go to
/// the same partition (`murmur2_random`, the Java client's hashing); keyless messages are spread
/// over the partitions at random. A fatal producer error (possible with idempotence) makes the
/// producer unusable: it is replaced by a new one on the next publish (counted by
/// [`crate::KafkaBroker::producers_replaced`]).
pub struct KafkaPublisher {
    client: Arc<Client>,
    producer: Mutex<Option<Arc<RawProducer>>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("url", &self.client.config.url)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl KafkaPublisher {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        KafkaPublisher {
            client,
            producer: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    fn create(&self) -> Result<RawProducer, Error> {
        producer_config(&self.client.config)
            .create_with_context(LogContext)
            .map_err(|e| map("create producer", e))
    }

    fn producer(&self) -> Result<Arc<RawProducer>, Error> {
        let mut slot = lock(&self.producer);
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let p = Arc::new(self.create()?);
        *slot = Some(p.clone());
        Ok(p)
    }

    /// After a failed delivery: if the producer hit a fatal error, drop it so the next publish
    /// makes a new one.
    fn replace_if_fatal(&self, used: &Arc<RawProducer>) {
        let Some((code, reason)) = used.client().fatal_error() else {
            return;
        };
        tracing::error!(error = %code, %reason, "kafka producer hit a fatal error; recreating it");
        let mut slot = lock(&self.producer);
        if slot.as_ref().is_some_and(|p| Arc::ptr_eq(p, used)) {
            if let Some(old) = slot.take() {
                self.client.producer_replaced();
                dispose(old);
            }
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) || self.client.is_closed() {
            Err(Error::Closed("kafka publisher"))
        } else {
            Ok(())
        }
    }

    /// Queues one message in librdkafka, waiting (up to the delivery timeout) while the local
    /// queue is full.
    async fn enqueue(
        &self,
        producer: &RawProducer,
        kafka_topic: &str,
        topic: &str,
        message: &Message,
    ) -> Result<DeliveryFuture, Error> {
        let started = Instant::now();
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 2)
                .insert(Header {
                    key: HEADER_ID,
                    value: Some(message.id.as_str()),
                })
                .insert(Header {
                    key: HEADER_TOPIC,
                    value: Some(topic),
                });
            for (k, v) in &message.headers {
                if k != HEADER_ID && k != HEADER_TOPIC {
                    headers = headers.insert(Header {
                        key: k.as_str(),
                        value: Some(v.as_str()),
                    });
                }
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(kafka_topic)
                .payload(&message.payload[..])
                .headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key.as_bytes());
            }
            match producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    _,
                )) => {
                    if started.elapsed() >= self.client.config.delivery_timeout {
                        return Err(Error::Backpressure {
                            queue: "librdkafka producer queue".into(),
                            capacity: 0,
                            waited: started.elapsed(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(map("publish", e)),
            }
        }
    }

    /// Awaits one report of a batch, recording the message as failed if it was not stored.
    async fn settle(
        &self,
        producer: &Arc<RawProducer>,
        index: usize,
        message: Message,
        report: DeliveryFuture,
        failed: &mut Vec<FailedMessage>,
    ) {
        if let Err(error) = self.delivered(producer, report).await {
            failed.push(FailedMessage {
                index,
                message,
                error,
            });
        }
    }

    async fn delivered(&self, producer: &Arc<RawProducer>, f: DeliveryFuture) -> Result<(), Error> {
        match f.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => {
                self.replace_if_fatal(producer);
                Err(match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::MessageTimedOut) => Error::Timeout {
                        operation: "kafka delivery report",
                        after: self.client.config.delivery_timeout,
                    },
                    _ => map("delivery", e),
                })
            }
            Err(_canceled) => Err(Error::Backend {
                backend: BACKEND,
                message: "producer went away before the delivery report".into(),
                retryable: true,
                source: None,
            }),
        }
    }

    /// Publishes to an explicit Kafka topic with `topic` as the longshore topic header.
    pub(crate) async fn publish_raw(
        &self,
        kafka_topic: &str,
        topic: &str,
        message: &Message,
    ) -> Result<(), Error> {
        message.check_limits(self.client.config.max_payload)?;
        self.send_to(kafka_topic, topic, message).await
    }

    /// Publishes a dead letter. Publisher limits do not apply: the broker already holds the
    /// original, so only the record size the producer sends counts, and a letter over it is
    /// cut to fit ([`fit_dead_letter`]) rather than refused, which would redeliver the
    /// original without end.
    pub(crate) async fn publish_letter(
        &self,
        kafka_topic: &str,
        letter: Message,
    ) -> Result<(), Error> {
        // Room for the record's framing and the id and topic headers the mapping adds.
        let room = self
            .client
            .config
            .max_message()
            .saturating_sub(1024 + kafka_topic.len());
        let letter = fit_dead_letter(letter, room);
        self.send_to(kafka_topic, kafka_topic, &letter).await
    }

    /// Publishes the delay copy of a delivered message ([`crate::delay`]) with `topic` as its
    /// longshore topic. Publisher limits do not apply, as for dead letters: the broker
    /// already holds the original, and refusing its copy would turn a delay into a hot loop.
    pub(crate) async fn publish_copy(
        &self,
        kafka_topic: &str,
        topic: &str,
        message: &Message,
    ) -> Result<(), Error> {
        self.send_to(kafka_topic, topic, message).await
    }

    async fn send_to(
        &self,
        kafka_topic: &str,
        topic: &str,
        message: &Message,
    ) -> Result<(), Error> {
        self.check_open()?;
        self.client
            .ensure_topics(&[kafka_topic.to_string()])
            .await?;
        let producer = self.producer()?;
        let f = self.enqueue(&producer, kafka_topic, topic, message).await?;
        self.delivered(&producer, f).await
    }

    /// What a batch to `topic` needs before its first message: an open publisher, the Kafka
    /// topic (created if missing) and the producer.
    async fn prepare(&self, topic: &str) -> Result<(String, Arc<RawProducer>), Error> {
        self.check_open()?;
        let kafka_topic = self.client.config.topic_map.kafka_topic(topic)?;
        self.client
            .ensure_topics(std::slice::from_ref(&kafka_topic))
            .await?;
        Ok((kafka_topic, self.producer()?))
    }
}

impl Drop for KafkaPublisher {
    fn drop(&mut self) {
        if let Some(p) = lock(&self.producer).take() {
            dispose(p);
        }
    }
}

/// Drops a producer off the async threads: librdkafka's destroy blocks (it purges, flushes
/// briefly and joins its threads).
fn dispose(p: Arc<RawProducer>) {
    let _ = std::thread::Builder::new()
        .name("longshore-kafka-drop".into())
        .spawn(move || drop(p));
}

#[async_trait]
impl Publisher for KafkaPublisher {
    async fn publish(&self, topic: &str, message: Message) -> Result<(), Error> {
        self.check_open()?;
        let kafka_topic = self.client.config.topic_map.kafka_topic(topic)?;
        self.publish_raw(&kafka_topic, topic, &message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        if messages.is_empty() {
            return Ok(());
        }
        let total = messages.len();
        let (kafka_topic, producer) = match self.prepare(topic).await {
            Ok(ready) => ready,
            Err(e) => return Err(BatchError::all(messages, || e.copy())),
        };
        // A window of delivery reports in flight, as rdkafka recommends for throughput: the
        // oldest is awaited once `REPORT_WINDOW` are pending, so a batch of any size holds a
        // bounded number of messages and never runs librdkafka's queue full.
        let max = self.client.config.max_payload;
        let mut failed = Vec::new();
        let mut window: VecDeque<(usize, Message, DeliveryFuture)> =
            VecDeque::with_capacity(total.min(REPORT_WINDOW));
        for (index, message) in messages.into_iter().enumerate() {
            if let Err(error) = message.check_limits(max) {
                failed.push(FailedMessage {
                    index,
                    message,
                    error,
                });
                continue;
            }
            if window.len() >= REPORT_WINDOW {
                if let Some((i, m, f)) = window.pop_front() {
                    self.settle(&producer, i, m, f, &mut failed).await;
                }
            }
            match self.enqueue(&producer, &kafka_topic, topic, &message).await {
                Ok(f) => window.push_back((index, message, f)),
                Err(error) => failed.push(FailedMessage {
                    index,
                    message,
                    error,
                }),
            }
        }
        while let Some((i, m, f)) = window.pop_front() {
            self.settle(&producer, i, m, f, &mut failed).await;
        }
        failed.sort_by_key(|f| f.index);
        BatchError::check(total, failed)
    }

    async fn close(&self) -> Result<(), Error> {
        self.closed.store(true, Ordering::Release);
        let Some(p) = lock(&self.producer).take() else {
            return Ok(());
        };
        let timeout = self.client.config.delivery_timeout;
        let flushed = tokio::task::spawn_blocking(move || {
            let r = p.flush(timeout);
            drop(p);
            r
        })
        .await
        .map_err(|e| Error::backend(BACKEND, true, e))?;
        flushed.map_err(|e| match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::OperationTimedOut) => Error::Timeout {
                operation: "kafka flush",
                after: timeout,
            },
            _ => map("flush", e),
        })
    }

    fn capabilities(&self) -> Capabilities {
        self.client.capabilities()
    }

    /// Not ready once closed (or its broker is); otherwise as the broker's health.
    async fn health(&self) -> longshore_core::Health {
        let closed = self.closed.load(Ordering::Acquire);
        crate::health::check(&self.client, closed.then_some("kafka publisher")).await
    }
}

/// The producer's librdkafka configuration. `acks=all` and the idempotent producer are what
/// "`publish` returned `Ok`" rests on, so they are set after the user's own properties and
/// cannot be weakened by them.
fn producer_config(config: &crate::config::KafkaConfig) -> rdkafka::ClientConfig {
    let mut cc = config.client_config();
    cc.set("max.in.flight.requests.per.connection", "5")
        .set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().max(1).to_string(),
        )
        .set("partitioner", "murmur2_random")
        .set("sticky.partitioning.linger.ms", "0")
        .set("linger.ms", "5");
    config.apply_properties(&mut cc);
    cc.set("acks", "all").set("enable.idempotence", "true");
    cc
}

#[cfg(test)]
mod tests {
    use super::producer_config;
    use crate::config::KafkaConfig;

    #[test]
    fn acks_all_and_idempotence_hold_whatever_the_properties_say() {
        let mut config = KafkaConfig::from_url("kafka://127.0.0.1:9092").expect("url");
        config
            .properties
            .push(("acks".to_string(), "1".to_string()));
        config
            .properties
            .push(("enable.idempotence".to_string(), "false".to_string()));
        let cc = producer_config(&config);
        assert_eq!(cc.get("acks"), Some("all"));
        assert_eq!(cc.get("enable.idempotence"), Some("true"));
    }
}
