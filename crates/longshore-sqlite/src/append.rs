//! Appending, inside a write transaction: the version check, idempotent retries and
//! duplicates, the events and their outbox rows.

use std::collections::{HashMap, HashSet};

use chrono::SecondsFormat;
use longshore_core::topic::validate_topic;
use longshore_core::{
    AppendResult, Codec, CodecError, Event, ExpectedVersion, JsonCodec, StoreError,
};
use sqlx::{Row, SqliteConnection};

use crate::client::now_ms;
use crate::error::SqliteError;
use crate::mapping::headers_json;
use crate::store::{validate_stream, SqliteStore};

const INSERT_EVENT: &str = "INSERT INTO longshore_events
  (stream_id, version, event_id, event_type, data, occurred_at, aggregate_id, correlation_id,
   causation_id, traceparent, headers, recorded_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
RETURNING position";

const INSERT_OUTBOX: &str = "INSERT INTO longshore_outbox
  (topic, message_id, message_key, headers, payload, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const UPSERT_STREAM: &str = "INSERT INTO longshore_streams (stream_id, version) VALUES (?1, ?2)
ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version";

/// (stream, version, position) of a stored event id.
type Known = HashMap<String, (String, i64, i64)>;

impl SqliteStore {
    /// Appends on `conn`, which is inside a `BEGIN IMMEDIATE` transaction (the caller
    /// commits): the file's write lock is held, so nothing changes between the checks and the
    /// inserts.
    pub(crate) async fn append_on(
        &self,
        conn: &mut SqliteConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[Event],
    ) -> Result<AppendResult, StoreError> {
        check_batch(stream_id, events)?;
        let current = stream_version(conn, stream_id).await?;
        if events.is_empty() {
            check_expected(stream_id, expected, current)?;
            return Ok(AppendResult {
                version: current,
                position: 0,
                written: false,
            });
        }
        let known = known_ids(conn, events).await?;
        if !known.is_empty() {
            return idempotent_or_duplicate(stream_id, current, events, &known);
        }
        check_expected(stream_id, expected, current)?;
        // Encode everything before writing anything.
        let mut rows = Vec::with_capacity(events.len());
        for e in events {
            rows.push(EventRow::build(e, self.pools.config.outbox)?);
        }
        let now = now_ms();
        let mut version = current;
        let mut position = 0;
        for (e, row) in events.iter().zip(&rows) {
            version += 1;
            let m = &e.metadata;
            let inserted = sqlx::query(INSERT_EVENT)
                .bind(stream_id)
                .bind(to_i64(version))
                .bind(e.id.to_string())
                .bind(&e.event_type)
                .bind(&row.data)
                .bind(e.timestamp.to_rfc3339_opts(SecondsFormat::Micros, true))
                .bind(&m.aggregate_id)
                .bind(&m.correlation_id)
                .bind(&m.causation_id)
                .bind(&m.traceparent)
                .bind(&row.headers)
                .bind(now)
                .fetch_one(&mut *conn)
                .await
                .map_err(SqliteError::from)?;
            position = inserted
                .try_get::<i64, _>("position")
                .map_err(SqliteError::from)?;
            if let Some(o) = &row.outbox {
                sqlx::query(INSERT_OUTBOX)
                    .bind(&o.topic)
                    .bind(&o.message_id)
                    .bind(&o.key)
                    .bind(&o.headers)
                    .bind(&o.payload)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .map_err(SqliteError::from)?;
            }
        }
        sqlx::query(UPSERT_STREAM)
            .bind(stream_id)
            .bind(to_i64(version))
            .execute(&mut *conn)
            .await
            .map_err(SqliteError::from)?;
        Ok(AppendResult {
            version,
            position: u64::try_from(position).unwrap_or(0),
            written: true,
        })
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) async fn stream_version(
    conn: &mut SqliteConnection,
    stream_id: &str,
) -> Result<u64, StoreError> {
    let v: Option<i64> =
        sqlx::query_scalar("SELECT version FROM longshore_streams WHERE stream_id = ?1")
            .bind(stream_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(SqliteError::from)?;
    Ok(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
}

/// Which of the events' ids are stored.
async fn known_ids(conn: &mut SqliteConnection, events: &[Event]) -> Result<Known, StoreError> {
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let ids = serde_json::to_string(&ids).map_err(SqliteError::EncodeHeaders)?;
    let rows = sqlx::query(
        "SELECT event_id, stream_id, version, position FROM longshore_events
         WHERE event_id IN (SELECT value FROM json_each(?1))",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(SqliteError::from)?;
    let mut known = HashMap::with_capacity(rows.len());
    for row in &rows {
        let get = |name: &str| row.try_get::<i64, _>(name).map_err(SqliteError::from);
        let id: String = row.try_get("event_id").map_err(SqliteError::from)?;
        let stream: String = row.try_get("stream_id").map_err(SqliteError::from)?;
        known.insert(id, (stream, get("version")?, get("position")?));
    }
    Ok(known)
}

/// Some ids are stored: if all of them are, in `stream_id`, the append is an idempotent retry
/// (`Ok(written: false)`); otherwise `DuplicateEvent` names the first stored one.
fn idempotent_or_duplicate(
    stream_id: &str,
    current: u64,
    events: &[Event],
    known: &Known,
) -> Result<AppendResult, StoreError> {
    let all_here = events.iter().all(|e| {
        known
            .get(&e.id.to_string())
            .is_some_and(|(stream, _, _)| stream == stream_id)
    });
    if all_here {
        let position = known.values().map(|(_, _, p)| *p).max().unwrap_or(0);
        return Ok(AppendResult {
            version: current,
            position: u64::try_from(position).unwrap_or(0),
            written: false,
        });
    }
    // Prefer one stored in another stream (the clearer conflict), else the first stored.
    let first = events
        .iter()
        .find(|e| {
            known
                .get(&e.id.to_string())
                .is_some_and(|(s, _, _)| s != stream_id)
        })
        .or_else(|| {
            events
                .iter()
                .find(|e| known.contains_key(&e.id.to_string()))
        })
        .unwrap_or(&events[0]);
    let detail = match known.get(&first.id.to_string()) {
        Some((stream, version, _)) => format!("stored in stream {stream:?} at version {version}"),
        None => "already stored".to_string(),
    };
    Err(StoreError::DuplicateEvent {
        event_id: first.id,
        detail,
    })
}

/// The stream name, and no id twice in one append.
fn check_batch(stream_id: &str, events: &[Event]) -> Result<(), StoreError> {
    validate_stream(stream_id)?;
    let mut seen = HashSet::with_capacity(events.len());
    if let Some(dup) = events.iter().find(|e| !seen.insert(e.id)) {
        return Err(StoreError::DuplicateEvent {
            event_id: dup.id,
            detail: "twice in one append".into(),
        });
    }
    Ok(())
}

fn check_expected(
    stream_id: &str,
    expected: ExpectedVersion,
    current: u64,
) -> Result<(), StoreError> {
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => current == 0,
        ExpectedVersion::Exact(v) => current == v,
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::WrongExpectedVersion {
            stream_id: stream_id.to_string(),
            expected,
            actual: current,
        })
    }
}

/// One event's encoded columns, and its outbox row.
struct EventRow {
    data: String,
    headers: String,
    outbox: Option<OutboxRow>,
}

struct OutboxRow {
    topic: String,
    message_id: String,
    key: Option<String>,
    headers: String,
    payload: Vec<u8>,
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Codec(CodecError::Encode(format!("{what}: {e}"))))
}

impl EventRow {
    fn build(e: &Event, outbox: bool) -> Result<Self, StoreError> {
        if e.event_type.is_empty() || e.event_type.len() > 200 {
            return Err(StoreError::Invalid {
                kind: "event type",
                value: e.event_type.chars().take(64).collect(),
                reason: "must be 1 to 200 bytes",
            });
        }
        let outbox = if outbox {
            // The event's outbox row: topic `events.<event_type>`, the JSON envelope.
            let topic = e.default_topic();
            validate_topic(&topic).map_err(|_| StoreError::Invalid {
                kind: "event type",
                value: e.event_type.chars().take(64).collect(),
                reason: "the outbox topic events.<event_type> must be dot-separated words of [A-Za-z0-9_-]",
            })?;
            let message = JsonCodec.encode(e)?;
            Some(OutboxRow {
                topic,
                headers: headers_json(&message.headers).map_err(StoreError::from)?,
                message_id: message.id,
                key: message.key,
                payload: message.payload.to_vec(),
            })
        } else {
            None
        };
        Ok(EventRow {
            data: to_json(&e.data, "event data")?,
            headers: to_json(&e.metadata.headers, "event headers")?,
            outbox,
        })
    }
}
