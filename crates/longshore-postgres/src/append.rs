//! Appending: the version check, the events and their outbox rows in one statement, and
//! what a failed check or a unique violation means (an idempotent retry, a duplicate, a
//! wrong expected version).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use longshore_core::topic::validate_topic;
use longshore_core::{
    AppendResult, Codec, CodecError, Event, ExpectedVersion, JsonCodec, StoreError,
};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, Row};
use uuid::Uuid;

use crate::error::{constraint, sqlstate, PgError};
use crate::store::{validate_stream, PgStore, MAX_EVENTS_PER_TRANSACTION};

/// What the in-transaction precheck found.
enum Precheck {
    /// None of the ids is stored: this transaction's next event index.
    Next(i64),
    /// Some ids are already stored.
    Stored,
}

impl PgStore {
    /// Appends on `conn`; `in_tx` when the connection is inside a caller's transaction.
    pub(crate) async fn append_on(
        &self,
        conn: &mut PgConnection,
        in_tx: bool,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[Event],
    ) -> Result<AppendResult, StoreError> {
        check_batch(stream_id, events)?;
        if events.is_empty() {
            let current = self.stream_version(conn, stream_id).await?;
            check_expected(stream_id, expected, current)?;
            return Ok(AppendResult {
                version: current,
                position: 0,
                written: false,
            });
        }
        let cols = Columns::build(events, self.state.config.outbox)?;
        // In autocommit the statement is a transaction of its own: index 0, and a duplicate is
        // simply a unique violation of that one statement.
        let mut first_index = 0_i64;
        if in_tx {
            match self.precheck(conn, &cols.ids).await? {
                Precheck::Next(index) => first_index = index,
                Precheck::Stored => {
                    let first = events[0].id;
                    return self
                        .idempotent_or(conn, stream_id, events, || StoreError::DuplicateEvent {
                            event_id: first,
                            detail: "already stored".into(),
                        })
                        .await;
                }
            }
        }
        let exact = exact_version(expected)?;
        match self
            .insert(conn, stream_id, expected, exact, first_index, cols)
            .await
        {
            Ok(row) => self.written(conn, row, stream_id, expected, events).await,
            Err(e) if sqlstate(&e).as_deref() == Some("23505") => {
                self.unique_violation(conn, in_tx, &e, stream_id, expected, events)
                    .await
            }
            Err(e) => Err(PgError::from(e).into()),
        }
    }

    /// Inside a caller's transaction: looks for stored ids first (a unique violation would
    /// abort the caller's transaction), and finds where this transaction's earlier appends
    /// left off. Planned per execution (not cached), so it always uses the indexes.
    async fn precheck(
        &self,
        conn: &mut PgConnection,
        ids: &[Uuid],
    ) -> Result<Precheck, StoreError> {
        let row = sqlx::query::<Postgres>(self.state.sql.in_tx_precheck.clone())
            .persistent(false)
            .bind(ids)
            .fetch_one(&mut *conn)
            .await
            .map_err(PgError::from)?;
        let dup: i64 = row.try_get("dup").map_err(PgError::from)?;
        let first_index: i64 = row.try_get("next_index").map_err(PgError::from)?;
        if dup > 0 {
            return Ok(Precheck::Stored);
        }
        let count = ids.len() as i64;
        if first_index + count > MAX_EVENTS_PER_TRANSACTION as i64 {
            return Err(StoreError::Invalid {
                kind: "append",
                value: format!("{} events", first_index + count),
                reason: "at most 65535 events per transaction",
            });
        }
        Ok(Precheck::Next(first_index))
    }

    /// The append statement: version check (an update of the stream row when `exact` > 0,
    /// an upsert otherwise), events, outbox rows and notification.
    async fn insert(
        &self,
        conn: &mut PgConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        exact: i64,
        first_index: i64,
        cols: Columns,
    ) -> Result<PgRow, sqlx::Error> {
        let state = &self.state;
        let query = if exact > 0 {
            state.sql.append_update.clone()
        } else {
            state.sql.append_upsert.clone()
        };
        let mut q = sqlx::query::<Postgres>(query)
            .bind(stream_id)
            .bind(cols.ids.len() as i64)
            .bind(exact)
            .bind(expected == ExpectedVersion::Any)
            .bind(cols.ids)
            .bind(cols.types)
            .bind(cols.data)
            .bind(cols.timestamps)
            .bind(cols.aggregate)
            .bind(cols.correlation)
            .bind(cols.causation)
            .bind(cols.traceparent)
            .bind(cols.headers)
            .bind(&state.channel)
            .bind(first_index);
        if state.config.outbox {
            q = q
                .bind(cols.topics)
                .bind(cols.message_ids)
                .bind(cols.keys)
                .bind(cols.message_headers)
                .bind(cols.payloads);
        }
        q.fetch_one(&mut *conn).await
    }

    /// The statement's answer: written, or the version check failed (still an idempotent
    /// success when every event is already stored).
    async fn written(
        &self,
        conn: &mut PgConnection,
        row: PgRow,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[Event],
    ) -> Result<AppendResult, StoreError> {
        let version: Option<i64> = row.try_get("version").map_err(PgError::from)?;
        let position: Option<i64> = row.try_get("position").map_err(PgError::from)?;
        if let (Some(version), Some(position)) = (version, position) {
            return Ok(AppendResult {
                version: version as u64,
                position: position as u64,
                written: true,
            });
        }
        let current = self.stream_version(conn, stream_id).await?;
        self.idempotent_or(conn, stream_id, events, || {
            StoreError::WrongExpectedVersion {
                stream_id: stream_id.to_string(),
                expected,
                actual: current,
            }
        })
        .await
    }

    /// A unique violation: a concurrent append stored one of these ids first
    /// (`events_event_id_key`), or took this stream's next version
    /// (`events_stream_version_key`, only if something bypassed `streams`).
    async fn unique_violation(
        &self,
        conn: &mut PgConnection,
        in_tx: bool,
        e: &sqlx::Error,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[Event],
    ) -> Result<AppendResult, StoreError> {
        let first = events[0].id;
        let version_conflict = constraint(e).as_deref() == Some("events_stream_version_key");
        if in_tx {
            // The caller's transaction is aborted: no follow-up query is possible.
            return Err(if version_conflict {
                StoreError::Conflict(format!(
                    "stream {stream_id:?}: its next version was written concurrently; \
                     this transaction is aborted, retry it"
                ))
            } else {
                StoreError::DuplicateEvent {
                    event_id: first,
                    detail: "a concurrent transaction stored one of these ids; this transaction is aborted".into(),
                }
            });
        }
        if version_conflict {
            let current = self.stream_version(conn, stream_id).await?;
            return Err(StoreError::WrongExpectedVersion {
                stream_id: stream_id.to_string(),
                expected,
                actual: current,
            });
        }
        self.idempotent_or(conn, stream_id, events, || StoreError::DuplicateEvent {
            event_id: first,
            detail: "a concurrent append stored one of these ids".into(),
        })
        .await
    }

    /// If every event id is already stored in `stream_id`, the append is an idempotent
    /// retry: `Ok(written: false)`. If some are stored, `DuplicateEvent` names the first;
    /// otherwise `otherwise()`.
    async fn idempotent_or(
        &self,
        conn: &mut PgConnection,
        stream_id: &str,
        events: &[Event],
        otherwise: impl FnOnce() -> StoreError,
    ) -> Result<AppendResult, StoreError> {
        let known = self.known_ids(conn, events).await?;
        if known.is_empty() {
            return Err(otherwise());
        }
        if let Some(e) = events.iter().find(|e| {
            known
                .get(&e.id)
                .is_some_and(|(stream, _, _)| stream != stream_id)
        }) {
            let (stream, version, _) = &known[&e.id];
            return Err(StoreError::DuplicateEvent {
                event_id: e.id,
                detail: format!("stored in stream {stream:?} at version {version}"),
            });
        }
        if known.len() == events.len() {
            let current = self.stream_version(conn, stream_id).await?;
            let position = known.values().map(|(_, _, p)| *p).max().unwrap_or(0);
            return Ok(AppendResult {
                version: current,
                position: position as u64,
                written: false,
            });
        }
        let first = events
            .iter()
            .find(|e| known.contains_key(&e.id))
            .map_or(events[0].id, |e| e.id);
        let (stream, version, _) = known
            .get(&first)
            .cloned()
            .unwrap_or_else(|| (stream_id.to_string(), 0, 0));
        Err(StoreError::DuplicateEvent {
            event_id: first,
            detail: format!("stored in stream {stream:?} at version {version}"),
        })
    }

    /// Which of the events' ids are stored: id -> (stream, version, position).
    async fn known_ids(
        &self,
        conn: &mut PgConnection,
        events: &[Event],
    ) -> Result<HashMap<Uuid, (String, i64, i64)>, StoreError> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let rows = sqlx::query::<Postgres>(self.state.sql.known_ids.clone())
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(PgError::from)?;
        let mut known = HashMap::with_capacity(rows.len());
        for row in &rows {
            let id: Uuid = row.try_get("event_id").map_err(PgError::from)?;
            let stream: String = row.try_get("stream_id").map_err(PgError::from)?;
            let version: i64 = row.try_get("version").map_err(PgError::from)?;
            let position: i64 = row.try_get("position").map_err(PgError::from)?;
            known.insert(id, (stream, version, position));
        }
        Ok(known)
    }

    async fn stream_version(
        &self,
        conn: &mut PgConnection,
        stream_id: &str,
    ) -> Result<u64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar::<Postgres, i64>(self.state.sql.stream_version.clone())
                .bind(stream_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(PgError::from)?;
        Ok(v.unwrap_or(0) as u64)
    }
}

/// The stream name, the batch size, and no id twice in one append.
fn check_batch(stream_id: &str, events: &[Event]) -> Result<(), StoreError> {
    validate_stream(stream_id)?;
    if events.len() > MAX_EVENTS_PER_TRANSACTION {
        return Err(StoreError::Invalid {
            kind: "append",
            value: format!("{} events", events.len()),
            reason: "at most 65535 events per transaction",
        });
    }
    let mut seen = HashSet::with_capacity(events.len());
    if let Some(dup) = events.iter().find(|e| !seen.insert(e.id)) {
        return Err(StoreError::DuplicateEvent {
            event_id: dup.id,
            detail: "twice in one append".into(),
        });
    }
    Ok(())
}

/// The version an `Exact` append expects (0 for the others, which upsert the stream).
fn exact_version(expected: ExpectedVersion) -> Result<i64, StoreError> {
    let exact = match expected {
        ExpectedVersion::Exact(n) => n,
        _ => 0,
    };
    i64::try_from(exact).map_err(|_| StoreError::Invalid {
        kind: "expected version",
        value: exact.to_string(),
        reason: "too large",
    })
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

/// The events of one append as column arrays (bound as Postgres arrays, unnested in SQL).
struct Columns {
    ids: Vec<Uuid>,
    types: Vec<String>,
    data: Vec<String>,
    timestamps: Vec<DateTime<Utc>>,
    aggregate: Vec<Option<String>>,
    correlation: Vec<Option<String>>,
    causation: Vec<Option<String>>,
    traceparent: Vec<Option<String>>,
    headers: Vec<String>,
    topics: Vec<String>,
    message_ids: Vec<String>,
    keys: Vec<Option<String>>,
    message_headers: Vec<String>,
    payloads: Vec<Vec<u8>>,
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Codec(CodecError::Encode(format!("{what}: {e}"))))
}

impl Columns {
    fn build(events: &[Event], outbox: bool) -> Result<Self, StoreError> {
        let n = events.len();
        let mut c = Columns {
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            timestamps: Vec::with_capacity(n),
            aggregate: Vec::with_capacity(n),
            correlation: Vec::with_capacity(n),
            causation: Vec::with_capacity(n),
            traceparent: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            topics: Vec::new(),
            message_ids: Vec::new(),
            keys: Vec::new(),
            message_headers: Vec::new(),
            payloads: Vec::new(),
        };
        for e in events {
            c.push_event(e)?;
            if outbox {
                c.push_message(e)?;
            }
        }
        Ok(c)
    }

    fn push_event(&mut self, e: &Event) -> Result<(), StoreError> {
        if e.event_type.is_empty() || e.event_type.len() > 200 {
            return Err(StoreError::Invalid {
                kind: "event type",
                value: e.event_type.chars().take(64).collect(),
                reason: "must be 1 to 200 bytes",
            });
        }
        self.ids.push(e.id);
        self.types.push(e.event_type.clone());
        self.data.push(to_json(&e.data, "event data")?);
        self.timestamps.push(e.timestamp);
        let m = &e.metadata;
        self.aggregate.push(m.aggregate_id.clone());
        self.correlation.push(m.correlation_id.clone());
        self.causation.push(m.causation_id.clone());
        self.traceparent.push(m.traceparent.clone());
        self.headers.push(to_json(&m.headers, "event headers")?);
        Ok(())
    }

    /// The event's outbox row: topic `events.<event_type>`, the JSON envelope.
    fn push_message(&mut self, e: &Event) -> Result<(), StoreError> {
        let topic = e.default_topic();
        validate_topic(&topic).map_err(|_| StoreError::Invalid {
            kind: "event type",
            value: e.event_type.chars().take(64).collect(),
            reason:
                "the outbox topic events.<event_type> must be dot-separated words of [A-Za-z0-9_-]",
        })?;
        let message = JsonCodec.encode(e)?;
        self.topics.push(topic);
        self.message_ids.push(message.id);
        self.keys.push(message.key);
        self.message_headers
            .push(to_json(&message.headers, "message headers")?);
        self.payloads.push(message.payload.to_vec());
        Ok(())
    }
}
