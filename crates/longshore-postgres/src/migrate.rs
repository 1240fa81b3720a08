//! The embedded migrations and applying them to one schema.

use longshore_core::Error;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Executor};

use crate::config::Schema;
use crate::error::{sqlstate, PgError};

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
            return Err(PgError::from(e).into());
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
        .map_err(PgError::from)?;
    let result = MIGRATOR.run(&migrations).await.map_err(|source| {
        Error::from(PgError::Migrate {
            schema: schema.name().to_string(),
            source,
        })
    });
    migrations.close().await;
    result
}
