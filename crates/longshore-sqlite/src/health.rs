//! Health (the file answers a read, and its schema is this build's) and lag.

use std::time::Duration;

use longshore_core::{Error, Health};

use crate::client::Pools;
use crate::error::SqliteError;
use crate::migrate::SCHEMA_VERSION;
use crate::BACKEND;

/// A health check answers quickly even with the file stuck: it never waits longer than this.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// The health of a handle on `pools`; `closed` names the handle when it was closed.
///
/// `connected` = a read of the file answered; `topology_declared` = longshore's schema in the
/// file is at this build's version.
pub(crate) async fn check(pools: &Pools, closed: Option<&'static str>) -> Health {
    if let Some(what) = closed {
        return Health::down(BACKEND, format!("{what} is closed"));
    }
    let query =
        sqlx::query_scalar::<_, i64>("SELECT coalesce(max(version), 0) FROM longshore_schema")
            .fetch_one(&pools.reader);
    let path = pools.config.path.display();
    match tokio::time::timeout(HEALTH_TIMEOUT, query).await {
        Err(_) => Health::down(
            BACKEND,
            format!("{path}: no answer within {HEALTH_TIMEOUT:?}"),
        ),
        Ok(Ok(SCHEMA_VERSION)) => Health::up(BACKEND),
        Ok(Ok(found)) => Health::up(BACKEND)
            .with_topology(false)
            .with_detail(format!(
                "{path}: schema version {found}, this build's is {SCHEMA_VERSION}"
            )),
        Ok(Err(e @ sqlx::Error::Database(_))) => Health::up(BACKEND)
            .with_topology(false)
            .with_detail(format!("{path}: longshore's tables are missing: {e}")),
        Ok(Err(e)) => Health::down(
            BACKEND,
            format!(
                "{path}: {}",
                Error::from(SqliteError::at(&pools.config.path, e))
            ),
        ),
    }
}

/// Rows of `subscription` not acknowledged yet: waiting, delayed by a nack, or leased to a
/// consumer and not settled. A subscription that does not exist is [`Error::InvalidName`].
pub(crate) async fn lag(pools: &Pools, subscription: &str) -> Result<u64, Error> {
    let (known, waiting): (i64, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM longshore_subscriptions WHERE name = ?1),
                (SELECT count(*) FROM longshore_queue WHERE subscription = ?1)",
    )
    .bind(subscription)
    .fetch_one(&pools.reader)
    .await
    .map_err(SqliteError::from)?;
    if known == 0 {
        return Err(Error::InvalidName {
            kind: "subscription",
            value: subscription.to_string(),
            reason: "no such subscription: subscribe or ensure_subscription creates it",
        });
    }
    Ok(u64::try_from(waiting).unwrap_or(0))
}
