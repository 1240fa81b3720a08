//! The queue's SQL statements, built once per schema.
//!
//! A subscription is a row in `queue_subscriptions` (its patterns, and the same patterns as
//! anchored regular expressions over `'.' || topic`). Publishing inserts one row per matching
//! subscription into `queue_messages` in a single statement; consumers lease rows with
//! `FOR UPDATE SKIP LOCKED`; settling deletes or releases the row only while the lease is
//! still the consumer's (`locked_by` and `attempts` match).

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::config::PgConfig;

/// The queue's statements for one schema; each statement's parameters are listed where it
/// is built.
pub(crate) struct QueueSql {
    pub(crate) publish: SqlStr,
    /// `publish` for a retry after a lost connection: skips subscriptions that already
    /// hold a row with the message's id (an earlier try committed and only its reply was lost).
    pub(crate) publish_retry: SqlStr,
    pub(crate) ensure: SqlStr,
    pub(crate) fetch: SqlStr,
    pub(crate) ack: SqlStr,
    pub(crate) nack: SqlStr,
    pub(crate) dead_letter: SqlStr,
    pub(crate) heartbeat: SqlStr,
    pub(crate) cancel: SqlStr,
}

fn sql(s: String) -> SqlStr {
    AssertSqlSafe(s).into_sql_str()
}

impl QueueSql {
    pub(crate) fn new(config: &PgConfig) -> Self {
        let subs = config.schema.table("queue_subscriptions");
        let msgs = config.schema.table("queue_messages");
        QueueSql {
            publish: sql(publish(&config.schema.table("queue_publish"), false)),
            publish_retry: sql(publish(&config.schema.table("queue_publish"), true)),
            ensure: sql(format!(
                "INSERT INTO {subs} AS s (name, patterns, regexes) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE
  SET patterns = ARRAY(SELECT DISTINCT unnest(s.patterns || EXCLUDED.patterns)),
      regexes = ARRAY(SELECT DISTINCT unnest(s.regexes || EXCLUDED.regexes))
  WHERE NOT (s.patterns @> EXCLUDED.patterns)"
            )),
            // $1 subscription, $2 limit, $3 consumer, $4 lease. The attempt count stops at
            // i32::MAX: another writer's absurd count must not make the whole fetch fail.
            // `id = ANY(ARRAY(…))` rather than a join with the picked ids: with a join the
            // planner hashed a sequential scan of the whole queue at mid sizes (3.8 ms per
            // fetch at 20,000 rows); this form is an index lookup at every size
            // (BENCHMARKS.md, "Postgres: planning").
            fetch: sql(format!(
                "UPDATE {msgs} m SET locked_by = $3, locked_until = now() + $4::interval,
  attempts = LEAST(m.attempts, 2147483646) + 1
WHERE m.id = ANY(ARRAY(
  SELECT id FROM {msgs}
  WHERE subscription = $1 AND available_at <= now()
    AND (locked_until IS NULL OR locked_until < now())
  ORDER BY id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
))
RETURNING m.id, m.topic, m.message_id, m.message_key, m.headers::text AS headers, m.payload, m.attempts"
            )),
            // $1 row ids, $2 consumer, $3 their attempt counts: the acks that arrived together
            // (`GroupCommit`), each row deleted only while its lease is still this consumer's.
            ack: sql(format!(
                "DELETE FROM {msgs} m USING unnest($1::bigint[], $3::int[]) AS a(id, attempts)
WHERE m.id = a.id AND m.locked_by = $2 AND m.attempts = a.attempts"
            )),
            // $4 delay, $5 channel, $6 notify now.
            nack: sql(format!(
                "WITH u AS (
  UPDATE {msgs} SET locked_by = NULL, locked_until = NULL, available_at = now() + $4::interval
  WHERE id = $1 AND locked_by = $2 AND attempts = $3
  RETURNING subscription
), nt AS (
  SELECT pg_notify($5, subscription) FROM u WHERE $6
)
SELECT (SELECT count(*) FROM u) AS updated, (SELECT count(*) FROM nt) AS notified"
            )),
            dead_letter: sql(dead_letter(&subs, &msgs)),
            // $1 message id. Only a scheduled row still waiting: a message being retried
            // after a delayed nack is no schedule to cancel.
            cancel: sql(format!(
                "DELETE FROM {msgs} WHERE message_id = $1 AND available_at > now() \
                 AND locked_by IS NULL AND headers ? 'x-deliver-at'"
            )),
            heartbeat: sql(format!(
                "UPDATE {msgs} SET locked_until = now() + $3::interval \
                 WHERE id = ANY($1) AND locked_by = $2"
            )),
        }
    }
}

/// Calls the schema's `queue_publish` function (migration 0003), which inserts a batch's rows
/// for every subscription whose patterns match the topic and notifies those subscriptions.
/// $1 topic, $2..$5 message columns, $6 channel, $7 when each row becomes visible (NULL: now;
/// a schedule otherwise).
///
/// The `retry` form skips a subscription that already holds a row with the message's id. It
/// scans that subscription's rows (no index on the id), which is acceptable on the rare retry; a
/// row consumed in between is published again, which at-least-once allows.
///
/// A function rather than the statement itself: a prepared statement of this shape was planned
/// again on every execution, which cost more than running it (BENCHMARKS.md, "Postgres:
/// planning"); the function plans it once per connection.
fn publish(function: &str, retry: bool) -> String {
    format!("SELECT inserted, notified FROM {function}($1, $2, $3, $4, $5, $6, $7, {retry})")
}

/// Removes the leased row and inserts the dead letter for every subscription of the DLQ
/// topic, in one statement. $1..$3 the lease, $4 DLQ topic, $5..$8 message, $9 channel.
fn dead_letter(subs: &str, msgs: &str) -> String {
    format!(
        "WITH d AS (
  DELETE FROM {msgs} WHERE id = $1 AND locked_by = $2 AND attempts = $3 RETURNING id
), subs AS (
  SELECT name FROM {subs} WHERE ('.' || $4) ~ ANY (regexes)
), ins AS (
  INSERT INTO {msgs} (subscription, topic, message_id, message_key, headers, payload)
  SELECT s.name, $4, $5, $6, $7::jsonb, $8 FROM subs s WHERE EXISTS (SELECT 1 FROM d)
  RETURNING subscription
), nt AS (
  SELECT pg_notify($9, subscription) FROM ins
)
SELECT (SELECT count(*) FROM d) AS deleted, (SELECT count(*) FROM nt) AS notified"
    )
}
