//! Health and lag of Kafka handles: one metadata request for health, and a probe client per
//! consumer group (which never joins it) for lag; all of librdkafka's blocking calls run off
//! the async threads.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use longshore_core::{Error, Health};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::client::{lock, Client, LogContext};
use crate::error::map;
use crate::BACKEND;

/// A health check answers quickly even with the cluster gone: it never waits longer than this
/// (or the configured request timeout, if shorter).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// The health of a handle on `client`; `closed` names the handle when it was closed.
///
/// Not ready once the handle or its broker is closed. `connected`: the cluster answered a
/// metadata request. `topology_declared`: every Kafka topic this broker handle created or
/// confirmed is still in that metadata (nothing is declared at connect, topics come with
/// first use).
pub(crate) async fn check(client: &Client, closed: Option<&'static str>) -> Health {
    if let Some(what) = closed {
        return Health::down(BACKEND, format!("{what} is closed"));
    }
    if client.is_closed() {
        return Health::down(BACKEND, "kafka broker is closed");
    }
    let url = client.config.url.redacted();
    let timeout = client.config.request_timeout.min(HEALTH_TIMEOUT);
    let present: HashSet<String> = match client.list_topics_within(timeout).await {
        Ok(present) => present.into_iter().collect(),
        Err(e) => return Health::down(BACKEND, format!("{url}: {e}")),
    };
    let mut missing: Vec<String> = client
        .known_topics()
        .into_iter()
        .filter(|t| !present.contains(t))
        .collect();
    if missing.is_empty() {
        return Health::up(BACKEND);
    }
    missing.sort();
    Health::up(BACKEND)
        .with_topology(false)
        .with_detail(format!("topics missing from {url}: {}", missing.join(", ")))
}

impl ConsumerContext for LogContext {}

type Probe = BaseConsumer<LogContext>;

/// Consumer lag: how far a subscription's consumer group is behind the end of its Kafka
/// topics.
///
/// Lag = the sum over the partitions of the subscription's Kafka topics of (high watermark −
/// the group's committed offset). A partition the group has no committed offset for yet counts
/// from its low watermark, because a new group reads from the beginning (`replay`). Every
/// record counts, also those of other longshore topics sharing the Kafka topic that the
/// subscription's patterns skip (Kafka cannot tell them apart without reading them); records
/// delivered but not committed yet (auto-commit runs every `commit_interval`) count as lag too.
///
/// One client per consumer group that never joins it: it only reads the group's committed
/// offsets and the partitions' watermarks. Kept for the subscriber's life, as lag is polled.
pub(crate) struct Probes {
    client: Arc<Client>,
    by_group: Mutex<HashMap<String, Arc<Probe>>>,
}

impl Probes {
    pub(crate) fn new(client: Arc<Client>) -> Self {
        Probes {
            client,
            by_group: Mutex::new(HashMap::new()),
        }
    }

    fn probe(&self, group: &str) -> Result<Arc<Probe>, Error> {
        if let Some(p) = lock(&self.by_group).get(group) {
            return Ok(p.clone());
        }
        let config = &self.client.config;
        let mut cc = config.client_config();
        cc.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        config.apply_properties(&mut cc);
        let probe: Arc<Probe> = Arc::new(
            cc.create_with_context(LogContext)
                .map_err(|e| map("create lag client", e))?,
        );
        Ok(lock(&self.by_group)
            .entry(group.to_string())
            .or_insert(probe)
            .clone())
    }

    /// The lag of `group` over the Kafka `topics` (see [`Probes`]).
    pub(crate) async fn lag(&self, group: &str, topics: Vec<String>) -> Result<u64, Error> {
        let probe = self.probe(group)?;
        let timeout = self.client.config.request_timeout;
        tokio::task::spawn_blocking(move || measure(&probe, &topics, timeout))
            .await
            .map_err(|e| Error::backend(BACKEND, true, e))?
    }

    /// Drops the probes off the async threads (librdkafka's destroy blocks).
    pub(crate) fn close(&self) {
        let probes: Vec<Arc<Probe>> = lock(&self.by_group).drain().map(|(_, p)| p).collect();
        if !probes.is_empty() {
            let _ = std::thread::Builder::new()
                .name("longshore-kafka-drop".into())
                .spawn(move || drop(probes));
        }
    }
}

fn measure(probe: &Probe, topics: &[String], timeout: Duration) -> Result<u64, Error> {
    let metadata = probe
        .fetch_metadata(None, timeout)
        .map_err(|e| map("fetch metadata", e))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        if t.error().is_none() && topics.iter().any(|name| name == t.name()) {
            for p in t.partitions() {
                tpl.add_partition(t.name(), p.id());
            }
        }
    }
    if tpl.count() == 0 {
        return Ok(0);
    }
    let committed = probe
        .committed_offsets(tpl, timeout)
        .map_err(|e| map("fetch committed offsets", e))?;
    let mut total: u64 = 0;
    for e in committed.elements() {
        let (low, high) = probe
            .fetch_watermarks(e.topic(), e.partition(), timeout)
            .map_err(|e| map("fetch watermarks", e))?;
        let from = match e.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        total = total.saturating_add(u64::try_from(high - from).unwrap_or(0));
    }
    Ok(total)
}
