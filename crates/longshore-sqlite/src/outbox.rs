//! The [`Outbox`] of [`SqliteStore`]: relays claim rows for a lease, publish them and delete
//! them once the publisher confirmed. A relay that dies mid-batch leaves its claimed rows,
//! claimed again at once by a relay of the same name, by any relay once the lease expires:
//! at-least-once, never lost. A relay skips every row of an aggregate (message key) whose
//! earlier row another relay holds, so several relays keep each aggregate's order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use longshore_core::{FailedOutboxMessage, Outbox, OutboxMessage, StoreError};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::client::{ms, now_ms};
use crate::error::SqliteError;
use crate::mapping::decode_message;
use crate::store::{limit, to_i64, validate_label, SqliteStore};

/// ?1 relay, ?2 seq, ?3 error, ?4 max attempts, ?5 now: counts a refused publish, parking the
/// row at the last attempt.
const RECORD_FAILURE: &str = "UPDATE longshore_outbox SET attempts = attempts + 1,
  last_error = ?3, claimed_by = NULL, claimed_until = NULL,
  failed_at = CASE WHEN attempts + 1 >= ?4 THEN ?5 END
WHERE seq = ?2 AND claimed_by = ?1
RETURNING failed_at IS NOT NULL AS parked";

/// ?1 seq, ?2 error, ?3 now: parks a row that cannot be read back as a message.
const PARK: &str = "UPDATE longshore_outbox SET failed_at = ?3, last_error = ?2,
  claimed_by = NULL, claimed_until = NULL WHERE seq = ?1";

const FAILED: &str = "SELECT seq, topic, message_id, message_key, headers, payload, attempts,
  coalesce(last_error, '') AS last_error, failed_at
FROM longshore_outbox WHERE failed_at IS NOT NULL ORDER BY seq LIMIT ?1";

const RETRY_FAILED: &str = "UPDATE longshore_outbox
SET failed_at = NULL, last_error = NULL, attempts = 0
WHERE seq IN (SELECT value FROM json_each(?1)) AND failed_at IS NOT NULL";

/// ?1 relay, ?2 limit, ?3 claim end, ?4 now. One statement: atomic under the write lock.
const CLAIM: &str = "UPDATE longshore_outbox SET claimed_by = ?1, claimed_until = ?3
WHERE seq IN (
  SELECT o.seq FROM longshore_outbox o
  WHERE o.failed_at IS NULL
    AND (o.claimed_until IS NULL OR o.claimed_until < ?4 OR o.claimed_by = ?1)
    AND (o.message_key IS NULL OR NOT EXISTS (
          SELECT 1 FROM longshore_outbox p
          WHERE p.message_key = o.message_key AND p.seq < o.seq
            AND p.claimed_by <> ?1 AND p.claimed_until >= ?4))
  ORDER BY o.seq LIMIT ?2)
RETURNING seq, topic, message_id, message_key, headers, payload";

/// The relayable message of a claimed row, or its seq and why it is not one.
fn outbox_message(row: &SqliteRow) -> Result<Result<OutboxMessage, (i64, String)>, SqliteError> {
    let seq: i64 = row.try_get("seq")?;
    let topic: Result<String, _> = row.try_get("topic");
    Ok(match (topic, decode_message(row)) {
        (Ok(topic), Ok(message)) => Ok(OutboxMessage {
            seq: u64::try_from(seq).unwrap_or(0),
            topic,
            message,
        }),
        (Err(e), _) => Err((seq, format!("undecodable outbox row: topic: {e}"))),
        (_, Err(u)) => Err((seq, format!("undecodable outbox row: {}", u.reason))),
    })
}

/// A parked row; what cannot be read of its message is left empty (the error says why).
fn failed_message(row: &SqliteRow) -> Result<FailedOutboxMessage, SqliteError> {
    let seq: i64 = row.try_get("seq")?;
    let attempts: i64 = row.try_get("attempts")?;
    let failed_at: i64 = row.try_get("failed_at")?;
    Ok(FailedOutboxMessage {
        seq: u64::try_from(seq).unwrap_or(0),
        topic: row.try_get("topic").unwrap_or_default(),
        message: decode_message(row).unwrap_or_else(|u| *u.kept),
        attempts: u32::try_from(attempts).unwrap_or(0),
        error: row.try_get("last_error")?,
        failed_at: DateTime::<Utc>::from_timestamp_millis(failed_at).unwrap_or_default(),
    })
}

impl SqliteStore {
    /// Deletes (`sent`) or releases the claimed rows `seqs` of `relay`.
    async fn settle_claims(&self, relay: &str, seqs: &[u64], sent: bool) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let sql = if sent {
            "DELETE FROM longshore_outbox
             WHERE seq IN (SELECT value FROM json_each(?2)) AND claimed_by = ?1"
        } else {
            "UPDATE longshore_outbox SET claimed_by = NULL, claimed_until = NULL
             WHERE seq IN (SELECT value FROM json_each(?2)) AND claimed_by = ?1"
        };
        let seqs: Vec<i64> = seqs.iter().map(|s| to_i64(*s)).collect();
        let seqs = serde_json::to_string(&seqs).map_err(SqliteError::EncodeHeaders)?;
        sqlx::query(sql)
            .bind(relay)
            .bind(seqs)
            .execute(&self.pools.writer)
            .await
            .map_err(SqliteError::from)?;
        Ok(())
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn claim(&self, relay: &str, limit_n: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        validate_label("relay", relay)?;
        let now = now_ms();
        let rows = sqlx::query(CLAIM)
            .bind(relay)
            .bind(limit(limit_n))
            .bind(now.saturating_add(ms(self.pools.config.claim_lease)))
            .bind(now)
            .fetch_all(&self.pools.writer)
            .await
            .map_err(SqliteError::from)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            match outbox_message(row)? {
                Ok(m) => out.push(m),
                // A damaged row (or another writer's) would fail every claim: park it.
                Err((seq, why)) => {
                    tracing::warn!(relay, seq, error = %why, "outbox row parked");
                    sqlx::query(PARK)
                        .bind(seq)
                        .bind(why)
                        .bind(now_ms())
                        .execute(&self.pools.writer)
                        .await
                        .map_err(SqliteError::from)?;
                }
            }
        }
        // RETURNING does not promise the subquery's order.
        out.sort_by_key(|m| m.seq);
        Ok(out)
    }

    async fn mark_sent(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError> {
        self.settle_claims(relay, seqs, true).await
    }

    async fn release(&self, relay: &str, seqs: &[u64]) -> Result<(), StoreError> {
        self.settle_claims(relay, seqs, false).await
    }

    async fn record_failure(
        &self,
        relay: &str,
        seq: u64,
        error: &str,
        max_attempts: u32,
    ) -> Result<bool, StoreError> {
        let parked: Option<bool> = sqlx::query_scalar(RECORD_FAILURE)
            .bind(relay)
            .bind(to_i64(seq))
            .bind(error)
            .bind(i64::from(max_attempts))
            .bind(now_ms())
            .fetch_optional(&self.pools.writer)
            .await
            .map_err(SqliteError::from)?;
        Ok(parked.unwrap_or(false))
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM longshore_outbox WHERE failed_at IS NULL")
            .await
    }

    async fn failed_count(&self) -> Result<u64, StoreError> {
        self.count("SELECT count(*) FROM longshore_outbox WHERE failed_at IS NOT NULL")
            .await
    }

    async fn failed(&self, limit_n: usize) -> Result<Vec<FailedOutboxMessage>, StoreError> {
        let rows = sqlx::query(FAILED)
            .bind(limit(limit_n))
            .fetch_all(&self.pools.reader)
            .await
            .map_err(SqliteError::from)?;
        Ok(rows
            .iter()
            .map(failed_message)
            .collect::<Result<Vec<_>, SqliteError>>()?)
    }

    async fn retry_failed(&self, seqs: &[u64]) -> Result<u64, StoreError> {
        let seqs: Vec<i64> = seqs.iter().map(|s| to_i64(*s)).collect();
        let seqs = serde_json::to_string(&seqs).map_err(SqliteError::EncodeHeaders)?;
        let done = sqlx::query(RETRY_FAILED)
            .bind(seqs)
            .execute(&self.pools.writer)
            .await
            .map_err(SqliteError::from)?;
        Ok(done.rows_affected())
    }
}

impl SqliteStore {
    async fn count(&self, statement: &'static str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(statement)
            .fetch_one(&self.pools.reader)
            .await
            .map_err(SqliteError::from)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
