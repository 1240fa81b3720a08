//! Health of the queue handles and the lag of a queue subscription.

use std::time::Duration;

use longshore_core::Error;
use longshore_core::Health;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres, Row};

use crate::config::PgConfig;
use crate::error::PgError;
use crate::migrate::MIGRATOR;
use crate::BACKEND;

/// A health check answers quickly even with the server gone: it never waits longer than this
/// for a pooled connection and the answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// The health of a handle on `pool`; `closed` names the handle when it was closed.
///
/// One query: `connected` = the server answered it; `topology_declared` = the queue tables
/// exist in the schema and its newest embedded migration is recorded as applied there.
pub(crate) async fn check(
    pool: &PgPool,
    config: &PgConfig,
    closed: Option<&'static str>,
) -> Health {
    if let Some(what) = closed {
        return Health::down(BACKEND, format!("{what} is closed"));
    }
    let schema = &config.schema;
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    // A missing `_sqlx_migrations` fails the query with a server error: still connected.
    let sql = format!(
        "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AS tables,
                EXISTS (SELECT 1 FROM {} WHERE version = $3 AND success) AS migrated",
        schema.table("_sqlx_migrations")
    );
    let query = sqlx::query::<Postgres>(AssertSqlSafe(sql))
        .bind(schema.table("queue_subscriptions"))
        .bind(schema.table("queue_messages"))
        .bind(latest)
        .fetch_one(pool);
    let url = config.url.redacted();
    let row = match tokio::time::timeout(HEALTH_TIMEOUT, query).await {
        Err(_) => {
            return Health::down(
                BACKEND,
                format!("{url}: no answer within {HEALTH_TIMEOUT:?}"),
            )
        }
        Ok(Err(sqlx::Error::Database(e))) => {
            return Health::up(BACKEND)
                .with_topology(false)
                .with_detail(format!("schema {:?} is not migrated: {e}", schema.name()))
        }
        Ok(Err(e)) => {
            return Health::down(BACKEND, format!("{url}: {}", Error::from(PgError::from(e))))
        }
        Ok(Ok(row)) => row,
    };
    let tables: bool = row.try_get("tables").unwrap_or(false);
    let migrated: bool = row.try_get("migrated").unwrap_or(false);
    match (tables, migrated) {
        (true, true) => Health::up(BACKEND),
        (false, _) => Health::up(BACKEND)
            .with_topology(false)
            .with_detail(format!(
                "queue tables missing in schema {:?}",
                schema.name()
            )),
        (true, false) => Health::up(BACKEND)
            .with_topology(false)
            .with_detail(format!(
                "schema {:?} lacks migration {latest}",
                schema.name()
            )),
    }
}

/// Rows of `subscription` not acknowledged yet: waiting, delayed by a nack, or leased to a
/// consumer and not settled. A subscription that does not exist is [`Error::InvalidName`].
pub(crate) async fn lag(
    pool: &PgPool,
    config: &PgConfig,
    subscription: &str,
) -> Result<u64, Error> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE name = $1) AS known,
                (SELECT count(*) FROM {} WHERE subscription = $1) AS waiting",
        config.schema.table("queue_subscriptions"),
        config.schema.table("queue_messages")
    );
    let row = sqlx::query::<Postgres>(AssertSqlSafe(sql))
        .bind(subscription)
        .fetch_one(pool)
        .await
        .map_err(PgError::from)?;
    let known: bool = row.try_get("known").map_err(PgError::from)?;
    if !known {
        return Err(Error::InvalidName {
            kind: "subscription",
            value: subscription.to_string(),
            reason: "no such subscription: subscribe or ensure_subscription creates it",
        });
    }
    let waiting: i64 = row.try_get("waiting").map_err(PgError::from)?;
    Ok(u64::try_from(waiting).unwrap_or(0))
}
