//! longshore's tables, created and upgraded by versioned DDL inside one `BEGIN IMMEDIATE`
//! transaction, so that several processes opening a new file at once serialize on SQLite's
//! write lock and exactly one of them creates the schema. The version lives in the file's
//! `longshore_schema` table; a file whose version is newer than this build's is refused with
//! [`SqliteError::SchemaTooNew`] instead of being written with statements it may not fit.

use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use crate::error::SqliteError;

/// The schema steps, in order: step `i` brings the file from version `i` to `i + 1`.
const STEPS: &[&str] = &[
    include_str!("../migrations/0001_longshore_init.sql"),
    include_str!("../migrations/0002_outbox_parking.sql"),
];

/// The newest schema version this build writes.
pub const SCHEMA_VERSION: i64 = STEPS.len() as i64;

/// The file's schema version (0 when longshore never wrote to it).
pub(crate) async fn version(conn: &mut sqlx::SqliteConnection) -> Result<i64, sqlx::Error> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'longshore_schema'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if exists == 0 {
        return Ok(0);
    }
    let row = sqlx::query("SELECT coalesce(max(version), 0) AS v FROM longshore_schema")
        .fetch_one(&mut *conn)
        .await?;
    row.try_get("v")
}

/// Creates or upgrades longshore's tables in the file behind `pool` (the writer), or refuses a
/// newer schema.
pub(crate) async fn migrate(pool: &SqlitePool) -> Result<(), SqliteError> {
    // Cheap check first, without the write lock: a newer file is refused even read-only.
    let found = version(&mut *pool.acquire().await?).await?;
    if found > SCHEMA_VERSION {
        return Err(SqliteError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // Another process may have migrated between the check and the lock.
    let found = version(&mut tx).await?;
    if found > SCHEMA_VERSION {
        return Err(SqliteError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for step in &STEPS[usize::try_from(found).unwrap_or(0)..] {
        sqlx::raw_sql(*step).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM longshore_schema")
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO longshore_schema (version) VALUES (?)")
        .bind(SCHEMA_VERSION)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
