//! The publisher: idempotent `acks=all` producer, one delivery report awaited per message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use longshore_core::{BatchError, Capabilities, Error, FailedMessage, Message, Publisher};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::broker::{lock, LogContext, Shared};
use crate::error::{map, BACKEND};
use crate::mapping::{HEADER_ID, HEADER_TOPIC};

type RawProducer = FutureProducer<LogContext>;

/// Publishes to Kafka. `Ok` means the broker acknowledged the message with `acks=all`
/// (the delivery report arrived without error).
///
/// The producer is idempotent (`enable.idempotence=true`, `acks=all`, at most 5 in-flight
/// requests), so librdkafka's internal retries neither duplicate nor reorder messages within a
/// partition. Messages with the same key (the ordering key, for events the aggregate id) go to
/// the same partition (`murmur2_random`, the Java client's hashing); keyless messages are spread
/// over the partitions at random. A fatal producer error (possible with idempotence) makes the
/// producer unusable: it is replaced by a new one on the next publish.
pub struct KafkaPublisher {
    shared: Arc<Shared>,
    producer: Mutex<Option<Arc<RawProducer>>>,
    closed: AtomicBool,
    replaced: AtomicU64,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("url", &self.shared.config.url)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl KafkaPublisher {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        KafkaPublisher {
            shared,
            producer: Mutex::new(None),
            closed: AtomicBool::new(false),
            replaced: AtomicU64::new(0),
        }
    }

    fn create(&self) -> Result<RawProducer, Error> {
        let config = &self.shared.config;
        let mut cc = config.client_config();
        cc.set("acks", "all")
            .set("enable.idempotence", "true")
            .set("max.in.flight.requests.per.connection", "5")
            .set(
                "message.timeout.ms",
                config.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("partitioner", "murmur2_random")
            .set("sticky.partitioning.linger.ms", "0")
            .set("linger.ms", "5");
        config.apply_properties(&mut cc);
        cc.create_with_context(LogContext)
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
                self.replaced.fetch_add(1, Ordering::Relaxed);
                dispose(old);
            }
        }
    }

    /// How many times a fatal error made this publisher drop its producer for a new one.
    pub fn producers_replaced(&self) -> u64 {
        self.replaced.load(Ordering::Relaxed)
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Acquire) {
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
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if started.elapsed() >= self.shared.config.delivery_timeout {
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

    async fn delivered(&self, producer: &Arc<RawProducer>, f: DeliveryFuture) -> Result<(), Error> {
        match f.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => {
                self.replace_if_fatal(producer);
                Err(match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::MessageTimedOut) => Error::Timeout {
                        operation: "kafka delivery report",
                        after: self.shared.config.delivery_timeout,
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
        self.check_open()?;
        message.check_limits(self.shared.config.max_payload)?;
        self.shared
            .ensure_topics(&[kafka_topic.to_string()])
            .await?;
        let producer = self.producer()?;
        let f = self.enqueue(&producer, kafka_topic, topic, message).await?;
        self.delivered(&producer, f).await
    }
}

impl Drop for KafkaPublisher {
    fn drop(&mut self) {
        if let Some(p) = lock(&self.producer).take() {
            dispose(p);
        }
    }
}

/// The same error again, for every message of a batch that failed as a whole (core errors
/// are not `Clone`; the copy keeps the kind and retryability, not the source).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::InvalidName {
            kind,
            value,
            reason,
        } => Error::InvalidName {
            kind,
            value: value.clone(),
            reason,
        },
        Error::Closed(what) => Error::Closed(what),
        Error::Config(m) => Error::Config(m.clone()),
        Error::Unauthorized { backend, message } => Error::Unauthorized {
            backend,
            message: message.clone(),
        },
        Error::Connection {
            backend, message, ..
        } => Error::Connection {
            backend,
            message: message.clone(),
            source: None,
        },
        Error::Timeout { operation, after } => Error::Timeout {
            operation,
            after: *after,
        },
        other => Error::Backend {
            backend: BACKEND,
            message: other.to_string(),
            retryable: other.is_retryable(),
            source: None,
        },
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
        let kafka_topic = self.shared.config.topic_map.kafka_topic(topic)?;
        self.publish_raw(&kafka_topic, topic, &message).await
    }

    async fn publish_batch(&self, topic: &str, messages: Vec<Message>) -> Result<(), BatchError> {
        if messages.is_empty() {
            return Ok(());
        }
        let total = messages.len();
        let prepared = self
            .check_open()
            .and_then(|()| self.shared.config.topic_map.kafka_topic(topic));
        let kafka_topic = match prepared {
            Ok(k) => k,
            Err(e) => return Err(BatchError::all(messages, || copy_error(&e))),
        };
        if let Err(e) = self
            .shared
            .ensure_topics(std::slice::from_ref(&kafka_topic))
            .await
        {
            return Err(BatchError::all(messages, || copy_error(&e)));
        }
        let producer = match self.producer() {
            Ok(p) => p,
            Err(e) => return Err(BatchError::all(messages, || copy_error(&e))),
        };
        // Enqueue everything in order first, then await all delivery reports together.
        let max = self.shared.config.max_payload;
        let mut failed = Vec::new();
        let mut pending = Vec::with_capacity(total);
        for (index, message) in messages.into_iter().enumerate() {
            let queued = match message.check_limits(max) {
                Ok(()) => self.enqueue(&producer, &kafka_topic, topic, &message).await,
                Err(e) => Err(e),
            };
            match queued {
                Ok(f) => pending.push((index, message, f)),
                Err(error) => failed.push(FailedMessage {
                    index,
                    message,
                    error,
                }),
            }
        }
        let (meta, futures): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .map(|(i, m, f)| ((i, m), self.delivered(&producer, f)))
            .unzip();
        for ((index, message), result) in meta.into_iter().zip(join_all(futures).await) {
            if let Err(error) = result {
                failed.push(FailedMessage {
                    index,
                    message,
                    error,
                });
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            failed.sort_by_key(|f| f.index);
            Err(BatchError { total, failed })
        }
    }

    async fn close(&self) -> Result<(), Error> {
        self.closed.store(true, Ordering::Release);
        let Some(p) = lock(&self.producer).take() else {
            return Ok(());
        };
        let timeout = self.shared.config.delivery_timeout;
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
        self.shared.capabilities()
    }

    /// Not ready once closed; otherwise see [`crate::KafkaBroker::health`].
    async fn health(&self) -> longshore_core::observe::Health {
        let closed = self.closed.load(Ordering::Acquire);
        crate::health::check(&self.shared, closed.then_some("kafka publisher")).await
    }
}
