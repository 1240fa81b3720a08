//! The state every handle of one Kafka broker shares: the configuration, the admin client,
//! the Kafka topics created or confirmed so far and the closed flag; librdkafka's logging;
//! and the adapter's capabilities.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use longshore_core::{Capabilities, Error};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::error::{map, KafkaError};
use crate::BACKEND;

/// Routes librdkafka's logs and errors into `tracing`.
#[derive(Clone, Default)]
pub(crate) struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

/// Logs an error librdkafka reports outside any call (it recovers by itself from most).
pub(crate) fn client_error(error: rdkafka::error::KafkaError, reason: &str) {
    tracing::warn!(target: "longshore_kafka::librdkafka", error = %error, "{reason}");
}

/// Logs a librdkafka log line at the matching `tracing` level.
pub(crate) fn log(level: RDKafkaLogLevel, fac: &str, msg: &str) {
    use RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => {
            tracing::error!(target: "longshore_kafka::librdkafka", facility = fac, "{msg}")
        }
        Warning => tracing::warn!(target: "longshore_kafka::librdkafka", facility = fac, "{msg}"),
        Notice | Info => {
            tracing::info!(target: "longshore_kafka::librdkafka", facility = fac, "{msg}")
        }
        Debug => tracing::debug!(target: "longshore_kafka::librdkafka", facility = fac, "{msg}"),
    }
}

/// Locks a mutex of plain data.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means another thread panicked mid-update of plain data; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state every handle of one [`crate::KafkaBroker`] shares.
pub(crate) struct Client {
    pub config: KafkaConfig,
    pub admin: Arc<AdminClient<LogContext>>,
    known_topics: Mutex<HashSet<String>>,
    /// Serialises topic creation so concurrent first publishes create each topic once.
    creating: tokio::sync::Mutex<()>,
    /// Set by the broker's `close`: every handle of the broker refuses work afterwards.
    closed: AtomicBool,
    /// How many times a fatal error made a publisher drop its producer for a new one.
    producers_replaced: AtomicU64,
}

impl Client {
    /// The shared state of a broker connected through `admin`.
    pub fn new(config: KafkaConfig, admin: AdminClient<LogContext>) -> Self {
        Client {
            config,
            admin: Arc::new(admin),
            known_topics: Mutex::new(HashSet::new()),
            creating: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            producers_replaced: AtomicU64::new(0),
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        capabilities(&self.config)
    }

    /// Whether the broker handle was closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the broker closed (see [`Client::is_closed`]).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Counts one producer replaced after a fatal error.
    pub fn producer_replaced(&self) {
        self.producers_replaced.fetch_add(1, Ordering::Relaxed);
    }

    /// How many producers were replaced after fatal errors, over all publishers.
    pub fn producers_replaced(&self) -> u64 {
        self.producers_replaced.load(Ordering::Relaxed)
    }

    /// Names of all Kafka topics, from cluster metadata.
    pub async fn list_topics(&self) -> Result<Vec<String>, Error> {
        self.list_topics_within(self.config.request_timeout).await
    }

    /// Names of all Kafka topics (with at least one partition) from one metadata request
    /// bounded by `timeout`, made on a blocking thread.
    pub async fn list_topics_within(&self, timeout: Duration) -> Result<Vec<String>, Error> {
        let admin = self.admin.clone();
        tokio::task::spawn_blocking(move || {
            admin
                .inner()
                .fetch_metadata(None, timeout)
                .map(|md| {
                    md.topics()
                        .iter()
                        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                        .map(|t| t.name().to_string())
                        .collect::<Vec<_>>()
                })
                .map_err(|e| map("fetch metadata", e))
        })
        .await
        .map_err(|e| Error::backend(BACKEND, true, e))?
    }

    /// The Kafka topics created or confirmed so far.
    pub fn known_topics(&self) -> Vec<String> {
        lock(&self.known_topics).iter().cloned().collect()
    }

    /// Whether `topic` exists with at least one partition.
    async fn topic_exists(&self, topic: &str) -> Result<bool, Error> {
        let admin = self.admin.clone();
        let timeout = self.config.request_timeout;
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let md = admin
                .inner()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(|e| map("fetch metadata", e))?;
            Ok(md
                .topics()
                .iter()
                .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
        })
        .await
        .map_err(|e| Error::backend(BACKEND, true, e))?
    }

    /// Makes sure the Kafka topics exist (created through the admin API when configured),
    /// remembering the ones seen so later calls cost nothing.
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), Error> {
        if !self.config.create_topics || self.unknown(topics).is_empty() {
            return Ok(());
        }
        let _guard = self.creating.lock().await;
        let todo = self.unknown(topics);
        if todo.is_empty() {
            return Ok(());
        }
        let admin_problem = self.create(&todo).await;
        self.await_visible(&todo, admin_problem).await
    }

    /// The topics of `topics` not created or confirmed yet, sorted, without duplicates.
    fn unknown(&self, topics: &[String]) -> Vec<String> {
        let known = lock(&self.known_topics);
        let mut v: Vec<String> = topics
            .iter()
            .filter(|t| !known.contains(*t))
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Asks the admin API to create `todo`; returns what went wrong, if anything.
    ///
    /// Admin calls misbehave on some Kafka-compatible brokers (and on rdkafka's mock cluster
    /// they time out): whatever they say, the metadata check of [`Client::await_visible`]
    /// decides, and the problem only becomes the reason if the topic never shows up.
    async fn create(&self, todo: &[String]) -> Option<String> {
        let replication = self.config.replication_factor.unwrap_or(-1);
        let new: Vec<NewTopic<'_>> = todo
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.config.partitions,
                    TopicReplication::Fixed(replication),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .operation_timeout(Some(self.config.request_timeout))
            .request_timeout(Some(self.config.request_timeout));
        let mut admin_problem: Option<String> = None;
        match tokio::time::timeout(
            self.config.request_timeout + Duration::from_secs(1),
            self.admin.create_topics(&new, &options),
        )
        .await
        {
            Ok(Ok(results)) => {
                for r in results {
                    match r {
                        Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((topic, code)) => {
                            tracing::warn!(%topic, error = %code, "kafka: creating topic failed");
                            admin_problem = Some(format!("create topic: {code}"));
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "kafka: create_topics failed");
                admin_problem = Some(format!("create topics: {e}"));
            }
            Err(_) => {
                tracing::warn!("kafka: create_topics timed out");
                admin_problem = Some("create topics timed out".into());
            }
        }
        admin_problem
    }

    /// Waits (up to the request timeout) until every topic of `todo` is in the metadata and
    /// remembers it; `admin_problem` is the reason given for one that never appears.
    async fn await_visible(
        &self,
        todo: &[String],
        admin_problem: Option<String>,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + self.config.request_timeout;
        for topic in todo {
            loop {
                if self.topic_exists(topic).await? {
                    lock(&self.known_topics).insert(topic.clone());
                    break;
                }
                if Instant::now() >= deadline {
                    let reason = admin_problem
                        .clone()
                        .unwrap_or_else(|| "not visible in metadata after creation".into());
                    return Err(KafkaError::Topic {
                        topic: topic.clone(),
                        reason,
                    }
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }
}

/// What the Kafka adapter can do with `config`.
pub(crate) fn capabilities(config: &KafkaConfig) -> Capabilities {
    let mut c = Capabilities::new(BACKEND, config.max_payload);
    // A new consumer group reads its Kafka topics from the beginning.
    c.replay = true;
    c.ordered_by_key = true;
    // A delayed nack is copied to the subscription's delay topic and held there by the
    // consumer, its offset uncommitted, until due: it survives restarts (`crate::delay`).
    c.native_delay = true;
    c.dedup_window = false;
    c.delivery_count = false;
    c
}
