//! The queue's SQL, and routing a message to its subscriptions inside a write transaction.
//!
//! A subscription is a row of `longshore_subscriptions` (its patterns as a JSON array).
//! Publishing reads the subscriptions and inserts one `longshore_queue` row per matching
//! subscription, in the transaction that holds the write lock, so no subscription declared
//! concurrently is half-seen. Consumers lease rows with one `UPDATE … RETURNING` (atomic: one
//! writer at a time); settling deletes or releases the row only while the lease is still the
//! consumer's (`locked_by` and `attempts` match). Times are Unix milliseconds.

use longshore_core::Message;
use sqlx::SqliteConnection;

use crate::client::now_ms;
use crate::error::SqliteError;
use crate::mapping::{headers_json, matching};

/// ?1 subscription, ?2 limit, ?3 consumer, ?4 lease end, ?5 now. The attempt count stops at
/// i32::MAX: another writer's absurd count must not make the whole fetch fail.
pub(crate) const FETCH: &str = "UPDATE longshore_queue
SET locked_by = ?3, locked_until = ?4, attempts = min(attempts, 2147483646) + 1
WHERE id IN (
  SELECT id FROM longshore_queue
  WHERE subscription = ?1 AND available_at <= ?5 AND (locked_until IS NULL OR locked_until < ?5)
  ORDER BY id LIMIT ?2)
RETURNING id, topic, message_id, message_key, headers, payload, attempts";

/// ?1 row, ?2 consumer, ?3 attempts.
pub(crate) const ACK: &str =
    "DELETE FROM longshore_queue WHERE id = ?1 AND locked_by = ?2 AND attempts = ?3";

/// ?1..?3 the lease, ?4 available again at.
pub(crate) const NACK: &str = "UPDATE longshore_queue
SET locked_by = NULL, locked_until = NULL, available_at = ?4
WHERE id = ?1 AND locked_by = ?2 AND attempts = ?3";

/// ?1 row ids (a JSON array), ?2 consumer, ?3 lease end.
pub(crate) const HEARTBEAT: &str = "UPDATE longshore_queue SET locked_until = ?3
WHERE id IN (SELECT value FROM json_each(?1)) AND locked_by = ?2";

const SUBSCRIPTIONS: &str = "SELECT name, patterns FROM longshore_subscriptions";

const INSERT: &str = "INSERT INTO longshore_queue
  (subscription, topic, message_id, message_key, headers, payload, available_at, published_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// ?1 message id, ?2 now (ms). Only rows still waiting for their schedule: a message being
/// retried after a delayed nack is no schedule to cancel.
pub(crate) const CANCEL: &str = "DELETE FROM longshore_queue
WHERE message_id = ?1 AND available_at > ?2 AND locked_by IS NULL
  AND json_extract(headers, '$.\"x-deliver-at\"') IS NOT NULL";

/// Inserts `messages` for every subscription whose patterns match `topic`, on a connection
/// inside a write transaction; returns the subscriptions reached (to wake their consumers).
pub(crate) async fn route(
    conn: &mut SqliteConnection,
    topic: &str,
    messages: &[&Message],
) -> Result<Vec<String>, SqliteError> {
    let subs: Vec<(String, String)> = sqlx::query_as(SUBSCRIPTIONS).fetch_all(&mut *conn).await?;
    let names = matching(&subs, topic);
    if names.is_empty() {
        return Ok(names);
    }
    let now = now_ms();
    for message in messages {
        let headers = headers_json(&message.headers)?;
        // A schedule (checked by the publisher) is when the row becomes visible.
        let visible = match message.scheduled_for() {
            Ok(Some(at)) => at.timestamp_millis().max(now),
            _ => now,
        };
        for name in &names {
            sqlx::query(INSERT)
                .bind(name)
                .bind(topic)
                .bind(&message.id)
                .bind(&message.key)
                .bind(&headers)
                .bind(message.payload.as_ref())
                .bind(visible)
                .bind(now)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(names)
}

/// Creates subscription `name` with `patterns`, or adds the patterns it lacks; inside a write
/// transaction.
pub(crate) async fn ensure(
    conn: &mut SqliteConnection,
    name: &str,
    patterns: &[String],
) -> Result<(), SqliteError> {
    let existing: Option<String> =
        sqlx::query_scalar("SELECT patterns FROM longshore_subscriptions WHERE name = ?1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    let mut all: Vec<String> = existing
        .and_then(|p| serde_json::from_str(&p).ok())
        .unwrap_or_default();
    let before = all.len();
    for p in patterns {
        if !all.contains(p) {
            all.push(p.clone());
        }
    }
    if before == all.len() && before > 0 {
        return Ok(());
    }
    let json = serde_json::to_string(&all).map_err(SqliteError::EncodeHeaders)?;
    sqlx::query(
        "INSERT INTO longshore_subscriptions (name, patterns, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET patterns = excluded.patterns",
    )
    .bind(name)
    .bind(json)
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
