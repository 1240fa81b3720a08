//! The store's SQL statements (events, streams, checkpoints, outbox), built once per schema.

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::config::Schema;

fn sql(s: String) -> SqlStr {
    AssertSqlSafe(s).into_sql_str()
}

/// The store's statements for one schema; each statement's parameters are listed where it
/// is built.
pub(crate) struct StoreSql {
    pub(crate) append_upsert: SqlStr,
    pub(crate) append_update: SqlStr,
    pub(crate) in_tx_precheck: SqlStr,
    pub(crate) known_ids: SqlStr,
    pub(crate) stream_version: SqlStr,
    pub(crate) read_stream: SqlStr,
    pub(crate) read_all: SqlStr,
    pub(crate) any_after: SqlStr,
    pub(crate) load_checkpoint: SqlStr,
    pub(crate) save_checkpoint: SqlStr,
    pub(crate) claim: SqlStr,
    pub(crate) mark_sent: SqlStr,
    pub(crate) release: SqlStr,
    pub(crate) pending: SqlStr,
    pub(crate) record_failure: SqlStr,
    pub(crate) park: SqlStr,
    pub(crate) failed_count: SqlStr,
    pub(crate) failed: SqlStr,
    pub(crate) retry_failed: SqlStr,
}

const EVENT_COLUMNS: &str = "position, stream_id, version, event_id, event_type, data::text AS data, \
     occurred_at, aggregate_id, correlation_id, causation_id, traceparent, headers::text AS headers";

/// The watermark: positions below `oldest running transaction id << 16` are final.
/// Written as an uncorrelated scalar subquery so that it is evaluated once per statement (an
/// InitPlan) and used as an index bound, whatever plan shape the planner picks.
const WATERMARK: &str = "(SELECT ((pg_snapshot_xmin(pg_current_snapshot())::text)::bigint << 16))";

impl StoreSql {
    pub(crate) fn new(schema: &Schema, outbox: bool) -> Self {
        let events = schema.table("events");
        let streams = schema.table("streams");
        let outbox_t = schema.table("outbox");
        let checkpoints = schema.table("checkpoints");
        let outbox_cte = if outbox {
            outbox_rows(&outbox_t)
        } else {
            String::new()
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
        StoreSql {
            append_upsert: sql(append(&events, &upsert, &outbox_cte)),
            append_update: sql(append(&events, &update, &outbox_cte)),
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
            read_all: sql(read_all(&events)),
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
            claim: sql(claim(&outbox_t)),
            mark_sent: sql(format!(
                "DELETE FROM {outbox_t} WHERE seq = ANY($2) AND claimed_by = $1"
            )),
            release: sql(format!(
                "UPDATE {outbox_t} SET claimed_by = NULL, claimed_until = NULL \
                 WHERE seq = ANY($2) AND claimed_by = $1"
            )),
            pending: sql(format!(
                "SELECT count(*) FROM {outbox_t} WHERE failed_at IS NULL"
            )),
            // $1 relay, $2 seq, $3 error, $4 max attempts.
            record_failure: sql(format!(
                "UPDATE {outbox_t} SET attempts = attempts + 1, last_error = $3, \
                   claimed_by = NULL, claimed_until = NULL, \
                   failed_at = CASE WHEN attempts + 1 >= $4 THEN now() END \
                 WHERE seq = $2 AND claimed_by = $1 \
                 RETURNING failed_at IS NOT NULL AS parked"
            )),
            // $1 seq, $2 error: a row that cannot be read back as a message.
            park: sql(format!(
                "UPDATE {outbox_t} SET failed_at = now(), last_error = $2, \
                   claimed_by = NULL, claimed_until = NULL WHERE seq = $1"
            )),
            failed_count: sql(format!(
                "SELECT count(*) FROM {outbox_t} WHERE failed_at IS NOT NULL"
            )),
            failed: sql(format!(
                "SELECT seq, topic, message_id, message_key, headers::text AS headers, payload, \
                   attempts, coalesce(last_error, '') AS last_error, failed_at \
                 FROM {outbox_t} WHERE failed_at IS NOT NULL ORDER BY seq LIMIT $1"
            )),
            retry_failed: sql(format!(
                "UPDATE {outbox_t} SET failed_at = NULL, last_error = NULL, attempts = 0 \
                 WHERE seq = ANY($1) AND failed_at IS NOT NULL"
            )),
        }
    }
}

/// The append statement around `stream_cte` (the stream's version check and bump), writing
/// the outbox rows with `outbox_cte` (empty when the outbox is off).
///
/// $1 stream, $2 count, $3 expected version, $4 update-on-conflict (Any), $5..$13 event
/// columns, $14 notify channel, $15 index of the first event within the transaction,
/// $16..$20 outbox columns. No lookup in here depends on the table's size: a plan cached
/// while the table was small stays right when it is large.
fn append(events: &str, stream_cte: &str, outbox_cte: &str) -> String {
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
}

/// The append's outbox rows ($16..$20), written only when the version check passed.
fn outbox_rows(outbox_t: &str) -> String {
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
}

/// One round trip: the page, and whether committed events wait above the watermark (then a
/// page that is not full is worth waiting for). `max(position)` is an index probe whatever
/// the table's statistics say, so a plan cached while the table was small stays cheap.
fn read_all(events: &str) -> String {
    format!(
        "SELECT coalesce((SELECT max(position) FROM {events}) \
                         >= greatest({WATERMARK}, $1 + 1), false) AS held_back, e.* \
         FROM (SELECT 1) AS one \
         LEFT JOIN LATERAL ( \
           SELECT {EVENT_COLUMNS} FROM {events} \
           WHERE position > $1 AND position < {WATERMARK} \
           ORDER BY position LIMIT $2) AS e ON true \
         ORDER BY e.position"
    )
}

/// Claims up to $2 rows for relay $1 for the lease $3, skipping every row of an aggregate
/// (message key) whose earlier row another relay holds.
fn claim(outbox_t: &str) -> String {
    format!(
        "WITH picked AS (
  SELECT o.seq FROM {outbox_t} o
  WHERE o.failed_at IS NULL
    AND (o.claimed_until IS NULL OR o.claimed_until < now() OR o.claimed_by = $1)
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
    )
}
