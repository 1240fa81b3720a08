//! The event store, its transactional outbox and the unit of work.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use longshore_core::codec::CodecError;
use longshore_core::topic::{validate_name, validate_topic};
use longshore_core::{
    AppendResult, Codec, Error, Event, EventStore, ExpectedVersion, JsonCodec, Message, Metadata,
    Outbox, OutboxMessage, RecordedEvent, StoreError,
};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Executor, PgConnection, Postgres, Row, SqlSafeStr, SqlStr};
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{PgConfig, Schema};
use crate::error::{constraint, map_error, map_store_error, sqlstate};
use crate::hub::Hub;

/// Most events one transaction may append: positions keep 16 bits for the index of an event
/// within its transaction.
pub const MAX_EVENTS_PER_TRANSACTION: usize = 65_535;

/// The embedded migrations (`migrations/`), applied per schema by [`migrate`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates `schema` if needed and applies the embedded migrations inside it.
///
/// The migration files use unqualified names; they run on a dedicated one-connection pool
/// whose sessions start with `search_path` set to the (validated, quoted) schema alone, so
/// the tables and sqlx's own `_sqlx_migrations` bookkeeping land in that schema and each
/// schema is migrated independently (several tenants or test schemas in one database). That
/// pool is closed afterwards, so the `search_path` never leaks into the caller's pool. Runtime
/// queries do not depend on `search_path`: they name `"schema".table` explicitly. (Rewriting
/// the migration SQL with the schema name would lose sqlx's checksums and bookkeeping.)
pub async fn migrate(pool: &PgPool, schema: &Schema) -> Result<(), Error> {
    let create = format!("CREATE SCHEMA IF NOT EXISTS {}", schema.quoted());
    if let Err(e) = pool.execute(AssertSqlSafe(create)).await {
        // Two processes creating the schema at once: the loser sees a duplicate.
        if !matches!(sqlstate(&e).as_deref(), Some("23505") | Some("42P06")) {
            return Err(map_error(e));
        }
    }
    // A one-connection pool whose sessions start with search_path = the schema alone.
    let options = (*pool.connect_options())
        .clone()
        .options([("search_path", schema.quoted())]);
    let migrations = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(map_error)?;
    let result = MIGRATOR.run(&migrations).await.map_err(|e| Error::Backend {
        backend: crate::BACKEND,
        message: format!("migrating schema {:?}: {e}", schema.name()),
        retryable: false,
        source: Some(Box::new(e)),
    });
    migrations.close().await;
    result
}

/// Opens a pool for `config`, failing fast when the server is unreachable.
pub async fn connect_pool(config: &PgConfig) -> Result<PgPool, Error> {
    let options = config.connect_options()?;
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.connect_timeout)
        .connect_with(options)
        .await
        .map_err(map_error)
}

fn sql(s: String) -> SqlStr {
    AssertSqlSafe(s).into_sql_str()
}

struct Sql {
    append_upsert: SqlStr,
    append_update: SqlStr,
    in_tx_precheck: SqlStr,
    known_ids: SqlStr,
    stream_version: SqlStr,
    read_stream: SqlStr,
    read_all: SqlStr,
    any_after: SqlStr,
    load_checkpoint: SqlStr,
    save_checkpoint: SqlStr,
    claim: SqlStr,
    mark_sent: SqlStr,
    release: SqlStr,
    pending: SqlStr,
}

const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, data::text AS data, \
     occurred_at, aggregate_id, correlation_id, causation_id, traceparent, headers::text AS headers";

/// The watermark: positions below `oldest running transaction id << 16` are final.
/// Written as an uncorrelated scalar subquery so that it is evaluated once per statement (an
/// InitPlan) and used as an index bound, whatever plan shape the planner picks.
const WATERMARK: &str = "(SELECT ((pg_snapshot_xmin(pg_current_snapshot())::text)::bigint << 16))";

impl Sql {
    fn new(schema: &Schema, outbox: bool) -> Self {
        let events = schema.table("events");
        let streams = schema.table("streams");
        let outbox_t = schema.table("outbox");
        let checkpoints = schema.table("checkpoints");
        // $1 stream, $2 count, $3 expected version, $4 update-on-conflict (Any), $5..$13 event
        // columns, $14 notify channel, $15 index of the first event within the transaction,
        // $16..$20 outbox columns. No lookup in here depends on the table's size: a plan cached
        // while the table was small stays right when it is large.
        let append = |stream_cte: String| {
            let outbox_cte = if outbox {
                format!(
                    ", ob AS (
  INSERT INTO {outbox_t} (topic, message_id, message_key, headers, payload)
  SELECT o.topic, o.mid, o.mkey, o.hdr::jsonb, o.payload
  FROM unnest($16::text[], $17::text[], $18::text[], $19::text[], $20::bytea[])
       WITH ORDINALITY AS o(topic, mid, mkey, hdr, payload, ord)
  WHERE EXISTS (SELECT 1 FROM st)
  ORDER BY o.ord
  RETURNING seq)"
                )
            } else {
                String::new()
            };
            format!(
                "WITH st AS ({stream_cte}
), ev AS (
  INSERT INTO {events} (position, stream_id, version, event_id, event_type, data, occurred_at,
                        aggregate_id, correlation_id, causation_id, traceparent, headers)
  SELECT ((pg_current_xact_id()::text)::bigint << 16) + $15 + u.ord - 1, $1,
         (SELECT version FROM st) - $2 + u.ord, u.id, u.ty,
         u.data::json, u.ts, u.agg, u.corr, u.caus, u.tp, u.hdr::jsonb
  FROM unnest($5::uuid[], $6::text[], $7::text[], $8::timestamptz[], $9::text[], $10::text[],
              $11::text[], $12::text[], $13::text[])
       WITH ORDINALITY AS u(id, ty, data, ts, agg, corr, caus, tp, hdr, ord)
  WHERE EXISTS (SELECT 1 FROM st)
  RETURNING position
){outbox_cte}, nt AS (
  SELECT pg_notify($14, '') FROM st
)
SELECT (SELECT version FROM st) AS version,
       (SELECT max(position) FROM ev) AS position, (SELECT count(*) FROM nt) AS notified,
       $3::bigint AS expected, $4::bool AS upsert"
            )
        };
        let upsert = format!(
            "
  INSERT INTO {streams} AS s (stream_id, version) VALUES ($1, $2)
  ON CONFLICT (stream_id) DO UPDATE SET version = s.version + $2 WHERE $4
  RETURNING s.version"
        );
        let update = format!(
            "
  UPDATE {streams} SET version = version + $2
  WHERE stream_id = $1 AND version = $3
  RETURNING version"
        );
        Sql {
            append_upsert: sql(append(upsert)),
            append_update: sql(append(update)),
            in_tx_precheck: sql(format!(
                "SELECT (SELECT count(*) FROM {events} WHERE event_id = ANY($1)) AS dup,
        (SELECT coalesce(max(position) + 1 - ((pg_current_xact_id()::text)::bigint << 16), 0)
         FROM {events}
         WHERE position >= ((pg_current_xact_id()::text)::bigint << 16)
           AND position < ((pg_current_xact_id()::text)::bigint << 16) + 65536) AS next_index"
            )),
            known_ids: sql(format!(
                "SELECT event_id, stream_id, version, position FROM {events} WHERE event_id = ANY($1)"
            )),
            stream_version: sql(format!(
                "SELECT version FROM {streams} WHERE stream_id = $1"
            )),
            read_stream: sql(format!(
                "SELECT {EVENT_COLUMNS} FROM {events} WHERE stream_id = $1 AND version >= $2 \
                 ORDER BY version LIMIT $3"
            )),
            // One round trip: the page, and whether committed events wait above the
            // watermark (then a page that is not full is worth waiting for). `max(position)`
            // is an index probe whatever the table's statistics say, so a plan cached while
            // the table was small stays cheap.
            read_all: sql(format!(
                "SELECT coalesce((SELECT max(position) FROM {events}) \
                                 >= greatest({WATERMARK}, $1 + 1), false) AS held_back, e.* \
                 FROM (SELECT 1) AS one \
                 LEFT JOIN LATERAL ( \
                   SELECT {EVENT_COLUMNS} FROM {events} \
                   WHERE position > $1 AND position < {WATERMARK} \
                   ORDER BY position LIMIT $2) AS e ON true \
                 ORDER BY e.position"
            )),
            any_after: sql(format!(
                "SELECT EXISTS (SELECT 1 FROM {events} WHERE position > $1 AND position < {WATERMARK})"
            )),
            load_checkpoint: sql(format!(
                "SELECT position FROM {checkpoints} WHERE name = $1"
            )),
            save_checkpoint: sql(format!(
                "INSERT INTO {checkpoints} (name, position) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"
            )),
            claim: sql(format!(
                "WITH picked AS (
  SELECT o.seq FROM {outbox_t} o
  WHERE (o.claimed_until IS NULL OR o.claimed_until < now() OR o.claimed_by = $1)
    AND (o.message_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM {outbox_t} p
          WHERE p.message_key = o.message_key AND p.seq < o.seq
            AND p.claimed_by <> $1 AND p.claimed_until >= now()))
  ORDER BY o.seq
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
UPDATE {outbox_t} o SET claimed_by = $1, claimed_until = now() + $3::interval
FROM picked WHERE o.seq = picked.seq
RETURNING o.seq, o.topic, o.message_id, o.message_key, o.headers::text AS headers, o.payload"
            )),
            mark_sent: sql(format!(
                "DELETE FROM {outbox_t} WHERE seq = ANY($2) AND claimed_by = $1"
            )),
            release: sql(format!(
                "UPDATE {outbox_t} SET claimed_by = NULL, claimed_until = NULL \
                 WHERE seq = ANY($2) AND claimed_by = $1"
            )),
            pending: sql(format!("SELECT count(*) FROM {outbox_t}")),
        }
    }
}

pub(crate) struct Inner {
    pool: PgPool,
    config: PgConfig,
    sql: Sql,
    hub: Arc<Hub>,
    channel: String,
    claim_lock: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.hub.stop();
    }
}

/// The PostgreSQL event store; also the [`Outbox`] its appends fill (when
/// [`PgConfig::outbox`] is on). Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.config.schema.name())
            .field("outbox", &self.inner.config.outbox)
            .field("url", &self.inner.config.url)
            .finish()
    }
}

impl PgStore {
    /// Connects, and applies the migrations unless [`PgConfig::migrate`] is off.
    pub async fn connect(config: PgConfig) -> Result<Self, Error> {
        let pool = connect_pool(&config).await?;
        Self::from_pool(pool, config).await
    }

    /// A store on an existing pool (shared with the service's own queries).
    pub async fn from_pool(pool: PgPool, config: PgConfig) -> Result<Self, Error> {
        if config.migrate {
            migrate(&pool, &config.schema).await?;
        }
        let hub = Hub::new(config.connect_options()?, config.schema.events_channel());
        Ok(PgStore {
            inner: Arc::new(Inner {
                sql: Sql::new(&config.schema, config.outbox),
                channel: config.schema.events_channel(),
                claim_lock: format!("longshore.outbox.{}", config.schema.name()),
                pool,
                config,
                hub,
            }),
        })
    }

    /// The pool, for the service's own queries.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.inner.config
    }

    /// Checks that the server answers.
    pub async fn health(&self) -> Result<(), Error> {
        sqlx::query::<Postgres>("SELECT 1")
            .execute(&self.inner.pool)
            .await
            .map(|_| ())
            .map_err(map_error)
    }

    /// An inbox in the same schema.
    pub fn inbox(&self) -> crate::PgInbox {
        crate::PgInbox::new(self.inner.pool.clone(), &self.inner.config.schema)
    }

    /// Starts a unit of work: a transaction in which the service's own writes, appended
    /// events and their outbox rows commit together (or not at all).
    ///
    /// ```no_run
    /// # async fn demo(store: longshore_postgres::PgStore) -> Result<(), Box<dyn std::error::Error>> {
    /// use longshore_core::{Event, ExpectedVersion};
    /// let mut uow = store.begin().await?;
    /// sqlx::query("UPDATE orders SET status = 'paid' WHERE id = $1")
    ///     .bind(42_i64)
    ///     .execute(uow.connection())
    ///     .await?;
    /// uow.append("order-42", ExpectedVersion::Exact(3), vec![Event::new("order_paid", serde_json::json!({"id": 42}))])
    ///     .await?;
    /// uow.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn begin(&self) -> Result<PgUnitOfWork, StoreError> {
        let tx = self.inner.pool.begin().await.map_err(map_store_error)?;
        Ok(PgUnitOfWork {
            store: self.clone(),
            tx,
        })
    }

    /// Appends inside a transaction the caller already holds (for services that manage their
    /// own `sqlx::Transaction`). Same semantics as [`EventStore::append`]; a unique violation
    /// from a concurrent append of the same event id aborts the caller's transaction and is
    /// reported as [`StoreError::DuplicateEvent`].
    pub async fn append_in(
        &self,
        conn: &mut PgConnection,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        self.append_on(conn, true, stream_id, expected, events)
            .await
    }

    async fn append_on(
        &self,
        conn: &mut PgConnection,
        in_tx: bool,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        let inner = &self.inner;
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
        if events.is_empty() {
            let current = self.stream_version(conn, stream_id).await?;
            check_expected(stream_id, expected, current)?;
            return Ok(AppendResult {
                version: current,
                position: 0,
                written: false,
            });
        }
        let cols = Columns::build(&events, inner.config.outbox)?;
        let count = events.len() as i64;
        // Inside a caller's transaction: look for stored ids first (a unique violation would
        // abort the caller's transaction), and find where this transaction's earlier appends
        // left off. Planned per execution (not cached), so it always uses the indexes. In
        // autocommit the statement is a transaction of its own: index 0, and a duplicate is
        // simply a unique violation of that one statement.
        let mut first_index = 0_i64;
        if in_tx {
            let row = sqlx::query::<Postgres>(inner.sql.in_tx_precheck.clone())
                .persistent(false)
                .bind(&cols.ids)
                .fetch_one(&mut *conn)
                .await
                .map_err(map_store_error)?;
            let dup: i64 = row.try_get("dup").map_err(map_store_error)?;
            first_index = row.try_get("next_index").map_err(map_store_error)?;
            if dup > 0 {
                let first = events[0].id;
                return self
                    .idempotent_or(conn, stream_id, &events, || StoreError::DuplicateEvent {
                        event_id: first,
                        detail: "already stored".into(),
                    })
                    .await;
            }
            if first_index + count > MAX_EVENTS_PER_TRANSACTION as i64 {
                return Err(StoreError::Invalid {
                    kind: "append",
                    value: format!("{} events", first_index + count),
                    reason: "at most 65535 events per transaction",
                });
            }
        }
        let (query, exact) = match expected {
            ExpectedVersion::Exact(n) if n > 0 => (inner.sql.append_update.clone(), n),
            _ => (inner.sql.append_upsert.clone(), 0),
        };
        let exact = i64::try_from(exact).map_err(|_| StoreError::Invalid {
            kind: "expected version",
            value: exact.to_string(),
            reason: "too large",
        })?;
        let mut q = sqlx::query::<Postgres>(query)
            .bind(stream_id)
            .bind(count)
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
            .bind(&inner.channel)
            .bind(first_index);
        if inner.config.outbox {
            q = q
                .bind(cols.topics)
                .bind(cols.message_ids)
                .bind(cols.keys)
                .bind(cols.message_headers)
                .bind(cols.payloads);
        }
        let row = match q.fetch_one(&mut *conn).await {
            Ok(row) => row,
            Err(e) if sqlstate(&e).as_deref() == Some("23505") => {
                // A unique violation: a concurrent append stored one of these ids first
                // (`events_event_id_key`), or took this stream's next version
                // (`events_stream_version_key`, only if something bypassed `streams`).
                let first = events[0].id;
                let version_conflict =
                    constraint(&e).as_deref() == Some("events_stream_version_key");
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
                return self
                    .idempotent_or(conn, stream_id, &events, || StoreError::DuplicateEvent {
                        event_id: first,
                        detail: "a concurrent append stored one of these ids".into(),
                    })
                    .await;
            }
            Err(e) => return Err(map_store_error(e)),
        };
        let version: Option<i64> = row.try_get("version").map_err(map_store_error)?;
        let position: Option<i64> = row.try_get("position").map_err(map_store_error)?;
        match (version, position) {
            (Some(version), Some(position)) => Ok(AppendResult {
                version: version as u64,
                position: position as u64,
                written: true,
            }),
            _ => {
                // The version check failed. A retried append of stored events is still an
                // idempotent success.
                let current = self.stream_version(conn, stream_id).await?;
                self.idempotent_or(conn, stream_id, &events, || {
                    StoreError::WrongExpectedVersion {
                        stream_id: stream_id.to_string(),
                        expected,
                        actual: current,
                    }
                })
                .await
            }
        }
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
        let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
        let rows = sqlx::query::<Postgres>(self.inner.sql.known_ids.clone())
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(map_store_error)?;
        if rows.is_empty() {
            return Err(otherwise());
        }
        let mut known = std::collections::HashMap::new();
        for row in &rows {
            let id: Uuid = row.try_get("event_id").map_err(map_store_error)?;
            let stream: String = row.try_get("stream_id").map_err(map_store_error)?;
            let version: i64 = row.try_get("version").map_err(map_store_error)?;
            let position: i64 = row.try_get("position").map_err(map_store_error)?;
            known.insert(id, (stream, version, position));
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

    async fn stream_version(
        &self,
        conn: &mut PgConnection,
        stream_id: &str,
    ) -> Result<u64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar::<Postgres, i64>(self.inner.sql.stream_version.clone())
                .bind(stream_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(map_store_error)?;
        Ok(v.unwrap_or(0) as u64)
    }
}

fn validate_stream(stream_id: &str) -> Result<(), StoreError> {
    validate_name("stream", stream_id).map_err(|_| StoreError::Invalid {
        kind: "stream",
        value: stream_id.chars().take(64).collect(),
        reason: "must be 1 to 128 bytes of [A-Za-z0-9_.-]",
    })
}

fn validate_label(kind: &'static str, value: &str) -> Result<(), StoreError> {
    if value.is_empty() || value.len() > 256 {
        return Err(StoreError::Invalid {
            kind,
            value: value.chars().take(64).collect(),
            reason: "must be 1 to 256 bytes",
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
            if e.event_type.is_empty() || e.event_type.len() > 200 {
                return Err(StoreError::Invalid {
                    kind: "event type",
                    value: e.event_type.chars().take(64).collect(),
                    reason: "must be 1 to 200 bytes",
                });
            }
            c.ids.push(e.id);
            c.types.push(e.event_type.clone());
            c.data.push(to_json(&e.data, "event data")?);
            c.timestamps.push(e.timestamp);
            let m = &e.metadata;
            c.aggregate.push(m.aggregate_id.clone());
            c.correlation.push(m.correlation_id.clone());
            c.causation.push(m.causation_id.clone());
            c.traceparent.push(m.traceparent.clone());
            c.headers.push(to_json(&m.headers, "event headers")?);
            if outbox {
                let topic = e.default_topic();
                validate_topic(&topic).map_err(|_| StoreError::Invalid {
                    kind: "event type",
                    value: e.event_type.chars().take(64).collect(),
                    reason: "the outbox topic events.<event_type> must be dot-separated words of [A-Za-z0-9_-]",
                })?;
                let message = JsonCodec.encode(e)?;
                c.topics.push(topic);
                c.message_ids.push(message.id);
                c.keys.push(message.key);
                c.message_headers
                    .push(to_json(&message.headers, "message headers")?);
                c.payloads.push(message.payload.to_vec());
            }
        }
        Ok(c)
    }
}

fn parse_headers(text: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Codec(CodecError::Malformed(format!("stored headers: {e}"))))
}

fn decode_event(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let get_err = map_store_error;
    let position: i64 = row.try_get("position").map_err(get_err)?;
    let version: i64 = row.try_get("version").map_err(get_err)?;
    let data: String = row.try_get("data").map_err(get_err)?;
    let headers: String = row.try_get("headers").map_err(get_err)?;
    let event_type: String = row.try_get("event_type").map_err(get_err)?;
    let data = serde_json::from_str(&data).map_err(|e| {
        StoreError::Codec(CodecError::Data {
            event_type: event_type.clone(),
            message: e.to_string(),
        })
    })?;
    Ok(RecordedEvent {
        stream_id: row.try_get("stream_id").map_err(get_err)?,
        version: version as u64,
        position: position as u64,
        event: Event {
            id: row.try_get("event_id").map_err(get_err)?,
            event_type,
            timestamp: row.try_get("occurred_at").map_err(get_err)?,
            data,
            metadata: Metadata {
                aggregate_id: row.try_get("aggregate_id").map_err(get_err)?,
                correlation_id: row.try_get("correlation_id").map_err(get_err)?,
                causation_id: row.try_get("causation_id").map_err(get_err)?,
                traceparent: row.try_get("traceparent").map_err(get_err)?,
                headers: parse_headers(&headers)?,
            },
        },
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for PgStore {
    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        // One statement in autocommit mode: the version check, the events, the outbox rows
        // and the notification commit atomically, in one round trip.
        let span = tracing::debug_span!(
            "longshore.append",
            backend = crate::BACKEND,
            stream = stream_id,
            events = events.len()
        );
        async {
            let mut conn = self.inner.pool.acquire().await.map_err(map_store_error)?;
            self.append_on(&mut conn, false, stream_id, expected, events)
                .await
        }
        .instrument(span)
        .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        from: u64,
        limit_n: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        validate_stream(stream_id)?;
        let rows = sqlx::query::<Postgres>(self.inner.sql.read_stream.clone())
            .bind(stream_id)
            .bind(to_i64(from))
            .bind(limit(limit_n))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(map_store_error)?;
        rows.iter().map(decode_event).collect()
    }

    async fn read_all(&self, after: u64, limit_n: usize) -> Result<Vec<RecordedEvent>, StoreError> {
        // Committed events above the watermark wait for older transactions still running
        // somewhere on the server. Those are usually milliseconds from committing, so a page
        // that is not full waits for them (up to `read_settle`, returning as soon as they are
        // released): sequential writers get read-your-writes in practice, and a long
        // transaction only delays the page by the bound.
        let deadline = tokio::time::Instant::now() + self.inner.config.read_settle;
        let mut pause = Duration::from_millis(1);
        loop {
            let rows = sqlx::query::<Postgres>(self.inner.sql.read_all.clone())
                .bind(to_i64(after))
                .bind(limit(limit_n))
                .fetch_all(&self.inner.pool)
                .await
                .map_err(map_store_error)?;
            let held_back = match rows.first() {
                Some(row) => row
                    .try_get::<bool, _>("held_back")
                    .map_err(map_store_error)?,
                None => false,
            };
            // With no event, the LEFT JOIN still yields one row whose columns are NULL.
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                if row
                    .try_get::<Option<i64>, _>("position")
                    .map_err(map_store_error)?
                    .is_some()
                {
                    events.push(decode_event(row)?);
                }
            }
            if events.len() >= limit_n || !held_back || tokio::time::Instant::now() >= deadline {
                return Ok(events);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<u64>, StoreError> {
        validate_label("checkpoint", name)?;
        let v: Option<i64> =
            sqlx::query_scalar::<Postgres, i64>(self.inner.sql.load_checkpoint.clone())
                .bind(name)
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(map_store_error)?;
        Ok(v.map(|p| p as u64))
    }

    async fn save_checkpoint(&self, name: &str, position: u64) -> Result<(), StoreError> {
        validate_label("checkpoint", name)?;
        sqlx::query::<Postgres>(self.inner.sql.save_checkpoint.clone())
            .bind(name)
            .bind(to_i64(position))
            .execute(&self.inner.pool)
            .await
            .map_err(map_store_error)?;
        Ok(())
    }

    async fn wait_for_events(&self, after: u64, timeout: Duration) {
        let hub = &self.inner.hub;
        let wait = async {
            hub.ensure_listening().await;
            let notified = hub.all().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Events committed before we listened would never be notified to us: look once.
            let present = sqlx::query_scalar::<Postgres, bool>(self.inner.sql.any_after.clone())
                .bind(to_i64(after))
                .fetch_one(&self.inner.pool)
                .await
                .unwrap_or(false);
            if !present {
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn claim(&self, relay: &str, limit_n: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        validate_label("relay", relay)?;
        let inner = &self.inner;
        // Claims are serialized by a transaction-scoped advisory lock (held for one short
        // statement), so the second relay's claim sees the first one's claims and never takes
        // a later row of an aggregate whose earlier row the first relay holds.
        // A claim is only a lease: its commit need not wait for the WAL flush (a claim lost in
        // a server crash leaves the rows unclaimed, as an expired lease would), which saves
        // one fsync per relay pass; `mark_sent` stays synchronous.
        let mut tx = inner.pool.begin().await.map_err(map_store_error)?;
        sqlx::query::<Postgres>(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), \
             set_config('synchronous_commit', 'off', true)",
        )
        .bind(&inner.claim_lock)
        .execute(&mut *tx)
        .await
        .map_err(map_store_error)?;
        let rows = sqlx::query::<Postgres>(inner.sql.claim.clone())
            .bind(relay)
            .bind(limit(limit_n))
            .bind(inner.config.claim_lease)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_store_error)?;
        tx.commit().await.map_err(map_store_error)?;
        let mut out = rows
            .iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq").map_err(map_store_error)?;
                let headers: String = row.try_get("headers").map_err(map_store_error)?;
                let payload: Vec<u8> = row.try_get("payload").map_err(map_store_error)?;
                Ok(OutboxMessage {
                    seq: seq as u64,
                    topic: row.try_get("topic").map_err(map_store_error)?,
                    message: Message {
                        id: row.try_get("message_id").map_err(map_store_error)?,
                        key: row.try_get("message_key").map_err(map_store_error)?,
                        headers: parse_headers(&headers)?,
                        payload: Bytes::from(payload),
                    },
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // UPDATE ... RETURNING does not keep the ORDER BY of its source.
        out.sort_by_key(|m| m.seq);
        Ok(out)
    }

    async fn mark_sent(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = seqs.iter().map(|s| to_i64(*s)).collect();
        sqlx::query::<Postgres>(self.inner.sql.mark_sent.clone())
            .bind(relay)
            .bind(seqs)
            .execute(&self.inner.pool)
            .await
            .map_err(map_store_error)?;
        Ok(())
    }

    async fn release(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = seqs.iter().map(|s| to_i64(*s)).collect();
        sqlx::query::<Postgres>(self.inner.sql.release.clone())
            .bind(relay)
            .bind(seqs)
            .execute(&self.inner.pool)
            .await
            .map_err(map_store_error)?;
        Ok(())
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar::<Postgres, i64>(self.inner.sql.pending.clone())
            .fetch_one(&self.inner.pool)
            .await
            .map_err(map_store_error)?;
        Ok(n as u64)
    }
}

/// A transaction in which a service's own writes, appended events and their outbox rows
/// commit together. Dropping it without [`PgUnitOfWork::commit`] rolls everything back.
pub struct PgUnitOfWork {
    store: PgStore,
    tx: sqlx::Transaction<'static, Postgres>,
}

impl std::fmt::Debug for PgUnitOfWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUnitOfWork")
            .field("store", &self.store)
            .finish()
    }
}

impl PgUnitOfWork {
    /// Appends events in this transaction (see [`EventStore::append`]). Nothing is visible to
    /// readers, and no outbox row can be relayed, before [`PgUnitOfWork::commit`].
    pub async fn append(
        &mut self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<Event>,
    ) -> Result<AppendResult, StoreError> {
        let store = self.store.clone();
        store
            .append_on(&mut self.tx, true, stream_id, expected, events)
            .await
    }

    /// The transaction's connection, for the service's own queries
    /// (`sqlx::query(..).execute(uow.connection())`).
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// The underlying sqlx transaction.
    pub fn transaction(&mut self) -> &mut sqlx::Transaction<'static, Postgres> {
        &mut self.tx
    }

    /// Marks `message_id` processed by `consumer` in this transaction; false if it already
    /// was (then the caller should skip its work and roll back or commit nothing new).
    pub async fn process_once(
        &mut self,
        consumer: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let inbox = self.store.inbox();
        inbox.process_once(&mut self.tx, consumer, message_id).await
    }

    /// Commits the service's writes, the events and the outbox rows atomically.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(map_store_error)
    }

    /// Rolls everything back.
    pub async fn rollback(self) -> Result<(), StoreError> {
        self.tx.rollback().await.map_err(map_store_error)
    }
}
