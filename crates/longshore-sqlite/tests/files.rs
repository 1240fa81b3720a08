//! Bad files: each is a clear typed error ([`SqliteError::of`] finds it in the core error).

mod common;

use std::time::Duration;

use longshore_core::{Broker, Error, Message, Subscription};
use longshore_sqlite::sqlx::{self, Connection};
use longshore_sqlite::{SqliteBroker, SqliteConfig, SqliteError};

async fn connect(config: SqliteConfig) -> Result<SqliteBroker, Error> {
    tokio::time::timeout(Duration::from_secs(30), SqliteBroker::connect(config))
        .await
        .expect("connect returns in bounded time")
}

#[tokio::test]
async fn a_path_that_cannot_be_created_is_open() {
    let missing_dir = common::dir().join(uuid::Uuid::new_v4().simple().to_string());
    let e = connect(SqliteConfig::new(missing_dir.join("x.db")))
        .await
        .expect_err("no such directory");
    assert!(!e.is_retryable(), "{e:?}");
    assert!(
        matches!(SqliteError::of(&e), Some(SqliteError::Open { path, .. }) if path.ends_with("x.db")),
        "{e:?}"
    );
    // A directory where the file should be.
    let e = connect(SqliteConfig::new(common::dir()))
        .await
        .expect_err("a directory");
    assert!(
        matches!(SqliteError::of(&e), Some(SqliteError::Open { .. })),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_not_a_database() {
    let path = common::fresh_path();
    std::fs::write(
        &path,
        "these are not the pages you are looking for\n".repeat(200),
    )
    .expect("write");
    let e = connect(SqliteConfig::new(&path))
        .await
        .expect_err("not a db");
    assert!(!e.is_retryable(), "{e:?}");
    assert!(
        matches!(SqliteError::of(&e), Some(SqliteError::NotADatabase { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("is not an SQLite database"), "{e}");
}

/// A file the process may not write. As root, file permissions do not stop writes, so the
/// same refusal is exercised with `mode=ro` (SQLite's read-only open) instead.
#[tokio::test]
async fn a_read_only_file_refuses_writes_with_a_typed_error() {
    let path = common::fresh_path();
    let broker = connect(SqliteConfig::new(&path)).await.expect("create");
    broker.close().await.expect("close");
    let mut perms = std::fs::metadata(&path).expect("meta").permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).expect("chmod");
    let writable = std::fs::OpenOptions::new().write(true).open(&path).is_ok();
    let config = SqliteConfig::new(&path).with_read_only(writable);
    if writable {
        println!("note: running as a user who may write read-only files; using mode=ro");
    }
    let refused = match connect(config).await {
        Err(e) => e,
        Ok(broker) => {
            // Declaring a subscription always writes.
            let e = broker
                .subscriber()
                .ensure_subscription(&Subscription::new("ro", ["orders.#"]))
                .await
                .expect_err("a read-only file takes no write");
            broker.close().await.expect("close");
            e
        }
    };
    assert!(
        matches!(refused, Error::Unauthorized { ref message, .. } if message.contains("read-only")),
        "{refused:?}"
    );
    assert!(!refused.is_retryable());
}

#[tokio::test]
async fn a_lock_held_past_the_busy_timeout_is_locked() {
    let path = common::fresh_path();
    let config = SqliteConfig::new(&path).with_busy_timeout(Duration::from_millis(200));
    let broker = connect(config).await.expect("create");
    // Another connection (as another process would) holds the write lock.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("other connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("take the write lock");
    let e = broker
        .publisher()
        .publish("orders.created", Message::new(b"x".to_vec()))
        .await
        .expect_err("locked");
    assert!(e.is_retryable(), "{e:?}");
    assert!(
        matches!(SqliteError::of(&e), Some(SqliteError::Locked { .. })),
        "{e:?}"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut other)
        .await
        .expect("release");
    broker
        .publisher()
        .publish("orders.created", Message::new(b"x".to_vec()))
        .await
        .expect("the lock is free again");
    broker.close().await.expect("close");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let path = common::fresh_path();
    let broker = connect(SqliteConfig::new(&path)).await.expect("create");
    broker.close().await.expect("close");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connection");
    sqlx::query("UPDATE longshore_schema SET version = 99")
        .execute(&mut conn)
        .await
        .expect("pretend a newer longshore wrote it");
    conn.close().await.expect("close");
    let e = connect(SqliteConfig::new(&path)).await.expect_err("newer");
    assert!(
        matches!(
            SqliteError::of(&e),
            Some(SqliteError::SchemaTooNew { found: 99, supported }) if *supported == longshore_sqlite::SCHEMA_VERSION
        ),
        "{e:?}"
    );
}
