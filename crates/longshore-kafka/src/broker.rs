//! The entry point: a connected broker handle, topic administration and client logging.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use longshore_core::observe::Health;
use longshore_core::{Capabilities, Error};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::config::KafkaConfig;
use crate::consumer::KafkaSubscriber;
use crate::error::{map, KafkaAdapterError, BACKEND};
use crate::producer::KafkaPublisher;

/// Routes librdkafka's logs and errors into `tracing`.
#[derive(Clone, Default)]
pub(crate) struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "longshore_kafka::librdkafka", error = %error, "{reason}");
    }
}

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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means another thread panicked mid-update of plain data; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Shared {
    pub config: KafkaConfig,
    pub admin: Arc<AdminClient<LogContext>>,
    known_topics: Mutex<HashSet<String>>,
    /// Serialises topic creation so concurrent first publishes create each topic once.
    creating: tokio::sync::Mutex<()>,
}

impl Shared {
    pub fn capabilities(&self) -> Capabilities {
        capabilities(&self.config)
    }

    /// Names of all Kafka topics, from cluster metadata.
    pub async fn list_topics(&self) -> Result<Vec<String>, Error> {
        let admin = self.admin.clone();
        let timeout = self.config.request_timeout;
        let md = tokio::task::spawn_blocking(move || {
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
        .map_err(|e| Error::backend(BACKEND, true, e))??;
        Ok(md)
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
        if !self.config.create_topics {
            return Ok(());
        }
        let missing = |known: &HashSet<String>| -> Vec<String> {
            let mut v: Vec<String> = topics
                .iter()
                .filter(|t| !known.contains(*t))
                .cloned()
                .collect();
            v.sort();
            v.dedup();
            v
        };
        if missing(&lock(&self.known_topics)).is_empty() {
            return Ok(());
        }
        let _guard = self.creating.lock().await;
        let todo = missing(&lock(&self.known_topics));
        if todo.is_empty() {
            return Ok(());
        }
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
        // Admin calls misbehave on some Kafka-compatible brokers (and on rdkafka's mock
        // cluster they time out): whatever they say, the metadata check below decides.
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
        let deadline = Instant::now() + self.config.request_timeout;
        for topic in &todo {
            loop {
                if self.topic_exists(topic).await? {
                    lock(&self.known_topics).insert(topic.clone());
                    break;
                }
                if Instant::now() >= deadline {
                    let reason = admin_problem
                        .clone()
                        .unwrap_or_else(|| "not visible in metadata after creation".into());
                    return Err(KafkaAdapterError::Topic {
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

pub(crate) fn capabilities(config: &KafkaConfig) -> Capabilities {
    let mut c = Capabilities::new(BACKEND, config.max_payload);
    // A new consumer group reads its Kafka topics from the beginning.
    c.replay = true;
    c.ordered_by_key = true;
    c.native_delay = false;
    c.dedup_window = false;
    c.delivery_count = false;
    c
}

/// A connection to a Kafka cluster. Clone it freely; [`KafkaBroker::publisher`] and
/// [`KafkaBroker::subscriber`] make handles with their own librdkafka clients.
#[derive(Clone)]
pub struct KafkaBroker {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KafkaBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl KafkaBroker {
    /// Connects: creates an admin client and reads the cluster metadata once, so an
    /// unreachable cluster is an [`Error::Connection`] here rather than later.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaBroker, Error> {
        if config.partitions < 1 {
            return Err(Error::Config("partitions must be at least 1".into()));
        }
        let mut cc = config.client_config();
        config.apply_properties(&mut cc);
        let admin: AdminClient<LogContext> = cc
            .create_with_context(LogContext)
            .map_err(|e| map("create admin client", e))?;
        let shared = Arc::new(Shared {
            config,
            admin: Arc::new(admin),
            known_topics: Mutex::new(HashSet::new()),
            creating: tokio::sync::Mutex::new(()),
        });
        let url = shared.config.url.redacted();
        shared.list_topics().await.map_err(|e| match e {
            Error::Unauthorized { .. } => e,
            other => Error::Connection {
                backend: BACKEND,
                message: format!("cannot reach {url}: {other}"),
                source: Some(Box::new(other)),
            },
        })?;
        Ok(KafkaBroker { shared })
    }

    /// Connects to `kafka://host:port[,host:port][?options]` (see [`KafkaConfig::from_url`]).
    pub async fn connect_url(url: &str) -> Result<KafkaBroker, Error> {
        Self::connect(KafkaConfig::from_url(url)?).await
    }

    /// A publisher with its own producer (created on first use).
    pub fn publisher(&self) -> KafkaPublisher {
        KafkaPublisher::new(self.shared.clone())
    }

    /// A subscriber; each `subscribe` starts a consumer (one group member) of its own.
    pub fn subscriber(&self) -> KafkaSubscriber {
        KafkaSubscriber::new(self.shared.clone())
    }

    /// What this adapter can do.
    pub fn capabilities(&self) -> Capabilities {
        self.shared.capabilities()
    }

    /// The configuration in use.
    pub fn config(&self) -> &KafkaConfig {
        &self.shared.config
    }

    /// Creates the Kafka topics of these longshore topics if they are missing.
    pub async fn ensure_topics(&self, topics: &[&str]) -> Result<(), Error> {
        let kafka: Vec<String> = topics
            .iter()
            .map(|t| self.shared.config.topic_map.kafka_topic(t))
            .collect::<Result<_, _>>()?;
        self.shared.ensure_topics(&kafka).await
    }

    /// Whether the cluster answers a metadata request (with a short timeout) and the topics
    /// created through this broker's handles are still there; see [`Health`].
    pub async fn health(&self) -> Health {
        crate::health::check(&self.shared, None).await
    }
}
