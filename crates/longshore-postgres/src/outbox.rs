//! The [`Outbox`] of [`PgStore`]: relays claim rows for a lease, publish them and delete them
//! once the publisher confirmed (see the crate docs for the guarantee).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use longshore_core::{FailedOutboxMessage, Outbox, OutboxMessage, StoreError};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, Row};

use crate::error::{retry_lost, PgError};
use crate::mapping::decode_message;
use crate::store::{limit, to_i64, validate_label, PgStore};

/// The relayable message of a claimed `outbox` row, or its seq and why it is not one.
fn outbox_message(row: &PgRow) -> Result<Result<OutboxMessage, (i64, String)>, PgError> {
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
fn failed_message(row: &PgRow) -> Result<FailedOutboxMessage, PgError> {
    let seq: i64 = row.try_get("seq")?;
    let attempts: i32 = row.try_get("attempts")?;
    let failed_at: DateTime<Utc> = row.try_get("failed_at")?;
    Ok(FailedOutboxMessage {
        seq: u64::try_from(seq).unwrap_or(0),
        topic: row.try_get("topic").unwrap_or_default(),
        message: decode_message(row).unwrap_or_else(|u| *u.kept),
        attempts: u32::try_from(attempts).unwrap_or(0),
        error: row.try_get("last_error")?,
        failed_at,
    })
}

impl PgStore {
    /// Claims up to `limit_n` rows for `relay` in one short transaction.
    async fn claim_rows(&self, relay: &str, limit_n: usize) -> Result<Vec<PgRow>, PgError> {
        let state = &self.state;
        // Claims are serialized by a transaction-scoped advisory lock (held for one short
        // statement), so the second relay's claim sees the first one's claims and never takes
        // a later row of an aggregate whose earlier row the first relay holds.
        // A claim is only a lease: its commit need not wait for the WAL flush (a claim lost in
        // a server crash leaves the rows unclaimed, as an expired lease would), which saves
        // one fsync per relay pass; `mark_sent` stays synchronous.
        // No JIT for the claim: once the server caches its generic plan (after five runs on
        // a connection), that plan's estimated cost can pass `jit_above_cost`, and compiling
        // it cost 130-200 ms per pass against ~2 ms for the claim itself (BENCHMARKS.md,
        // "The relay's claim and JIT").
        let mut tx = state.pool.begin().await?;
        sqlx::query::<Postgres>(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)), \
             set_config('synchronous_commit', 'off', true), set_config('jit', 'off', true)",
        )
        .bind(&state.claim_lock)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query::<Postgres>(state.sql.claim.clone())
            .bind(relay)
            .bind(limit(limit_n))
            .bind(state.config.claim_lease)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Deletes (`sent`) or releases the claimed rows `seqs` of `relay`.
    async fn settle_claims(&self, relay: &str, seqs: &[u64], sent: bool) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let sql = if sent {
            &self.state.sql.mark_sent
        } else {
            &self.state.sql.release
        };
        let seqs: Vec<i64> = seqs.iter().map(|s| to_i64(*s)).collect();
        retry_lost(
            "settle outbox claims",
            self.state.config.connect_timeout,
            |_| {
                sqlx::query::<Postgres>(sql.clone())
                    .bind(relay)
                    .bind(&seqs)
                    .execute(&self.state.pool)
            },
        )
        .await
        .map_err(PgError::from)?;
        Ok(())
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn claim(&self, relay: &str, limit_n: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        validate_label("relay", relay)?;
        // A retry after a lost connection claims again; rows an earlier try claimed (if
        // it committed) are this relay's, which a relay of the same name may claim at once.
        let rows = retry_lost(
            "claim outbox rows",
            self.state.config.connect_timeout,
            |_| self.claim_rows(relay, limit_n),
        )
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            match outbox_message(row)? {
                Ok(m) => out.push(m),
                // Another writer's row (or a damaged one) would fail every claim: park it.
                Err((seq, why)) => {
                    tracing::warn!(relay, seq, error = %why, "outbox row parked");
                    sqlx::query::<Postgres>(self.state.sql.park.clone())
                        .bind(seq)
                        .bind(why)
                        .execute(&self.state.pool)
                        .await
                        .map_err(PgError::from)?;
                }
            }
        }
        // UPDATE ... RETURNING does not keep the ORDER BY of its source.
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
        let max = i32::try_from(max_attempts).unwrap_or(i32::MAX);
        let parked = retry_lost(
            "record an outbox failure",
            self.state.config.connect_timeout,
            |_| {
                sqlx::query_scalar::<Postgres, bool>(self.state.sql.record_failure.clone())
                    .bind(relay)
                    .bind(to_i64(seq))
                    .bind(error)
                    .bind(max)
                    .fetch_optional(&self.state.pool)
            },
        )
        .await
        .map_err(PgError::from)?;
        Ok(parked.unwrap_or(false))
    }

    async fn pending(&self) -> Result<u64, StoreError> {
        self.count(self.state.sql.pending.clone()).await
    }

    async fn failed_count(&self) -> Result<u64, StoreError> {
        self.count(self.state.sql.failed_count.clone()).await
    }

    async fn failed(&self, limit_n: usize) -> Result<Vec<FailedOutboxMessage>, StoreError> {
        let rows = sqlx::query::<Postgres>(self.state.sql.failed.clone())
            .bind(limit(limit_n))
            .fetch_all(&self.state.pool)
            .await
            .map_err(PgError::from)?;
        Ok(rows
            .iter()
            .map(failed_message)
            .collect::<Result<Vec<_>, PgError>>()?)
    }

    async fn retry_failed(&self, seqs: &[u64]) -> Result<u64, StoreError> {
        let seqs: Vec<i64> = seqs.iter().map(|s| to_i64(*s)).collect();
        let done = sqlx::query::<Postgres>(self.state.sql.retry_failed.clone())
            .bind(&seqs)
            .execute(&self.state.pool)
            .await
            .map_err(PgError::from)?;
        Ok(done.rows_affected())
    }
}

impl PgStore {
    async fn count(&self, statement: sqlx::SqlStr) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar::<Postgres, i64>(statement)
            .fetch_one(&self.state.pool)
            .await
            .map_err(PgError::from)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
