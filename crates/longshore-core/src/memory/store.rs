//! In-memory event store with an optional transactional outbox.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use crate::codec::{Codec, JsonCodec};
use crate::event::Event;
use crate::outbox::{FailedOutboxMessage, Outbox, OutboxMessage};
use crate::store::{AppendResult, EventStore, ExpectedVersion, RecordedEvent, StoreError};
use crate::topic::validate_name;

/// How long a relay's claim on outbox rows lasts before another relay may take them.
const CLAIM_LEASE: Duration = Duration::from_secs(30);

struct OutboxRow {
    message: OutboxMessage,
    claim: Option<(String, Instant)>,
    /// Refused publishes so far.
    attempts: u32,
    /// Parked: the last error and when; never claimed until retried.
    parked: Option<(String, DateTime<Utc>)>,
}

#[derive(Default)]
struct State {
    all: Vec<RecordedEvent>,
    streams: HashMap<String, Vec<usize>>,
    ids: HashMap<Uuid, (String, u64)>,
    checkpoints: HashMap<String, u64>,
    outbox: BTreeMap<u64, OutboxRow>,
    next_seq: u64,
}

struct StoreState {
    state: Mutex<State>,
    head: watch::Sender<u64>,
    outbox: bool,
}

/// An in-memory [`EventStore`], also an [`Outbox`] when made with
/// [`MemoryStore::with_outbox`]: then every append writes one outbox row per event, in the
/// same critical section (the in-memory equivalent of one transaction), topic
/// `events.<event_type>`.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<StoreState>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("outbox", &self.shared.outbox)
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn invalid(kind: &'static str, value: &str, reason: &'static str) -> StoreError {
    StoreError::Invalid {
        kind,
        value: value.to_string(),
        reason,
    }
}

impl MemoryStore {
    /// A store without an outbox.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// A store whose appends also fill its outbox.
    pub fn with_outbox() -> Self {
        Self::build(true)
    }

    fn build(outbox: bool) -> Self {
        let (head, _) = watch::channel(0);
        MemoryStore {
            shared: Arc::new(StoreState {
                state: Mutex::new(State::default()),
                head,
                outbox,
            }),
        }
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        validate_name("stream", stream_id).map_err(|_| {
            invalid(
                "stream",
                stream_id,
                "must be 1 to 128 bytes of [A-Za-z0-9_.-]",
            )
        })?;
        // Encode outside the lock; a codec failure must not leave a half-written append.
        let encoded: Vec<_> = if self.shared.outbox {
            events
                .iter()
                .map(|e| JsonCodec.encode(e).map(|m| (e.default_topic(), m)))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let mut s = lock(&self.shared.state);
        let current = s.streams.get(stream_id).map_or(0, |v| v.len() as u64);

        // Idempotency first: a retried append of stored events succeeds without writing.
        let known: Vec<_> = events
            .iter()
            .filter_map(|e| s.ids.get(&e.id).map(|k| (e.id, k)))
            .collect();
        if !events.is_empty() && known.len() == events.len() {
            if let Some((id, (stream, _))) = known.iter().find(|(_, (st, _))| st != stream_id) {
                return Err(StoreError::DuplicateEvent {
                    event_id: *id,
                    detail: format!("stored in stream {stream:?}"),
                });
            }
            let last = known.iter().map(|(_, (_, v))| *v).max().unwrap_or(current);
            let position = s.streams[stream_id][(last - 1) as usize];
            return Ok(AppendResult {
                version: current,
                position: s.all[position].position,
                written: false,
            });
        }
        if let Some((id, (stream, version))) = known.first() {
            return Err(StoreError::DuplicateEvent {
                event_id: *id,
                detail: format!("stored in stream {stream:?} at version {version}"),
            });
        }
        let mut seen = HashSet::new();
        if let Some(dup) = events.iter().find(|e| !seen.insert(e.id)) {
            return Err(StoreError::DuplicateEvent {
                event_id: dup.id,
                detail: "twice in one append".into(),
            });
        }
        let ok = match expected {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(v) => current == v,
        };
        if !ok {
            return Err(StoreError::WrongExpectedVersion {
                stream_id: stream_id.to_string(),
                expected,
                actual: current,
            });
        }
        let mut version = current;
        let mut position = s.all.len() as u64;
        for event in events {
            version += 1;
            position += 1;
            s.ids.insert(event.id, (stream_id.to_string(), version));
            let index = s.all.len();
            s.all.push(RecordedEvent {
                stream_id: stream_id.to_string(),
                version,
                position,
                event,
            });
            s.streams
                .entry(stream_id.to_string())
                .or_default()
                .push(index);
        }
        for (topic, message) in encoded {
            s.next_seq += 1;
            let seq = s.next_seq;
            s.outbox.insert(
                seq,
                OutboxRow {
                    message: OutboxMessage {
                        seq,
                        topic,
                        message,
                    },
                    claim: None,
                    attempts: 0,
                    parked: None,
                },
            );
        }
        drop(s);
        self.shared.head.send_replace(position);
        Ok(AppendResult {
            version,
            position,
            written: true,
        })
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let s = lock(&self.shared.state);
        let Some(indexes) = s.streams.get(stream_id) else {
            return Ok(Vec::new());
        };
        let skip = from.saturating_sub(1) as usize;
        Ok(indexes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|&i| s.all[i].clone())
            .collect())
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        // Positions are 1-based and dense here, so position p sits at index p - 1.
        let s = lock(&self.shared.state);
        let start = (after as usize).min(s.all.len());
        Ok(s.all[start..].iter().take(limit).cloned().collect())
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        Ok(lock(&self.shared.state).checkpoints.get(name).copied())
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        lock(&self.shared.state)
            .checkpoints
            .insert(name.to_string(), position);
        Ok(())
    }

    async fn wait_for_events(&self, after: u64, timeout: Duration) {
        let mut rx = self.shared.head.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|head| *head > after)).await;
    }
}

#[async_trait]
impl Outbox for MemoryStore {
    async fn claim(&self, relay: &str, limit: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        let now = Instant::now();
        let mut s = lock(&self.shared.state);
        // Keys with an earlier row held by another relay are skipped entirely, so one
        // aggregate's rows are never relayed out of order by two relays.
        let mut blocked: HashSet<Option<String>> = HashSet::new();
        let mut claimed = Vec::new();
        for row in s.outbox.values_mut() {
            if claimed.len() >= limit {
                break;
            }
            if row.parked.is_some() {
                continue;
            }
            let key = row.message.message.key.clone();
            let held_by_other = matches!(&row.claim, Some((r, at)) if r != relay && now.duration_since(*at) < CLAIM_LEASE);
            if held_by_other {
                blocked.insert(key);
                continue;
            }
            if key.is_some() && blocked.contains(&key) {
                continue;
            }
            row.claim = Some((relay.to_string(), now));
            claimed.push(row.message.clone());
        }
        Ok(claimed)
    }

    async fn mark_sent(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError> {
        let mut s = lock(&self.shared.state);
        for seq in seqs {
            if matches!(s.outbox.get(seq), Some(OutboxRow { claim: Some((r, _)), .. }) if r == relay)
            {
                s.outbox.remove(seq);
            }
        }
        Ok(())
    }

    async fn release(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError> {
        let mut s = lock(&self.shared.state);
        for seq in seqs {
            if let Some(row) = s.outbox.get_mut(seq) {
                if matches!(&row.claim, Some((r, _)) if r == relay) {
                    row.claim = None;
                }
            }
        }
        Ok(())
    }

    async fn record_failure(
        &self,
        relay: &str,
        seq: u64,
        error: &str,
        max_attempts: u32,
    ) -> Result<bool, StoreError> {
        let mut s = lock(&self.shared.state);
        let Some(row) = s.outbox.get_mut(&seq) else {
            return Ok(false);
        };
        if !matches!(&row.claim, Some((r, _)) if r == relay) {
            return Ok(false);
        }
        row.attempts = row.attempts.saturating_add(1);
        row.claim = None;
        if row.attempts >= max_attempts {
            row.parked = Some((error.to_string(), Utc::now()));
            return Ok(true);
        }
        Ok(false)
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let s = lock(&self.shared.state);
        Ok(s.outbox.values().filter(|r| r.parked.is_none()).count() as u64)
    }

    async fn failed_count(&self) -> Result<u64, StoreError> {
        let s = lock(&self.shared.state);
        Ok(s.outbox.values().filter(|r| r.parked.is_some()).count() as u64)
    }

    async fn failed(&self, limit: usize) -> Result<Vec<FailedOutboxMessage>, StoreError> {
        let s = lock(&self.shared.state);
        Ok(s.outbox
            .values()
            .filter_map(|r| {
                let (error, at) = r.parked.as_ref()?;
                Some(FailedOutboxMessage {
                    seq: r.message.seq,
                    topic: r.message.topic.clone(),
                    message: r.message.message.clone(),
                    attempts: r.attempts,
                    error: error.clone(),
                    failed_at: *at,
                })
            })
            .take(limit)
            .collect())
    }

    async fn retry_failed(&self, seqs: &[u64]) -> Result<u64, StoreError> {
        let mut s = lock(&self.shared.state);
        let mut n = 0;
        for seq in seqs {
            if let Some(row) = s.outbox.get_mut(seq) {
                if row.parked.take().is_some() {
                    row.attempts = 0;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}
