//! The examples on SQLite, where the store is a file that outlives the process.
//!
//! `order_service` runs twice, each time in a child process of this test binary (a real
//! process restart), on one file: afterwards the file holds both runs' events, in one gap-free
//! global order. `event_sourced_orders` runs with its store, outbox and inbox all in one file.
#![cfg(feature = "sqlite")]

#[allow(dead_code)]
#[path = "../examples/order_service.rs"]
mod order_service;

#[allow(dead_code)]
#[path = "../examples/event_sourced_orders/main.rs"]
mod event_sourced_orders;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use longshore::sqlite::{sqlx, SqliteConfig, SqliteStore};
use longshore::{Config, EventStore, Outbox};

/// Set in a child process: the URL `child_runs_order_service` runs the example on.
const CHILD_URL: &str = "LONGSHORE_SQLITE_EXAMPLE_CHILD_URL";

/// A child's whole run (connect, the demo, exit) may take this long.
const CHILD_BOUND: Duration = Duration::from_secs(120);

fn fresh_path() -> PathBuf {
    let dir = std::env::temp_dir().join("longshore-sqlite-tests");
    std::fs::create_dir_all(&dir).expect("test directory");
    dir.join(format!("example-{}.db", uuid::Uuid::new_v4().simple()))
}

/// Not a test of its own: the body of a child process (does nothing unless [`CHILD_URL`] is
/// set, as it is only by `order_service_twice_on_one_file`).
#[tokio::test]
async fn child_runs_order_service() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    order_service::run(&Config::new(url))
        .await
        .unwrap_or_else(|e| panic!("order_service in the child: {e}"));
}

/// Runs `order_service` on `url` in a child process, failing the test if it fails or does
/// not finish within [`CHILD_BOUND`] (then the child, ours, is killed).
fn run_child(url: &str) {
    let exe = std::env::current_exe().expect("this test binary");
    let mut child = Command::new(exe)
        .args(["child_runs_order_service", "--exact", "--nocapture"])
        .env(CHILD_URL, url)
        .spawn()
        .expect("spawn the child");
    let deadline = Instant::now() + CHILD_BOUND;
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            assert!(status.success(), "order_service child failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("order_service child did not finish within {CHILD_BOUND:?}");
        }
        // Polling a child process's exit: std has no awaitable wait with a timeout.
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn open(path: &Path) -> SqliteStore {
    SqliteStore::connect(SqliteConfig::new(path))
        .await
        .expect("open the example's file")
}

#[tokio::test]
async fn order_service_twice_on_one_file() {
    let path = fresh_path();
    let url = format!("sqlite://{}", path.display());
    tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            run_child(&url);
            run_child(&url);
        }
    })
    .await
    .expect("children");
    // Each run appends 5 events (3 created, 2 cancelled) to streams named with its run id.
    let store = open(&path).await;
    let all = store.read_all(0, 100).await.expect("read_all");
    assert_eq!(all.len(), 10, "both runs' events survive: {all:?}");
    let positions: Vec<u64> = all.iter().map(|r| r.position).collect();
    assert_eq!(
        positions,
        (1..=10).collect::<Vec<_>>(),
        "one gap-free order"
    );
    let runs: BTreeSet<&str> = all
        .iter()
        .filter_map(|r| r.stream_id.rsplit('-').next())
        .collect();
    assert_eq!(runs.len(), 2, "two runs: {runs:?}");
    store.close().await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn event_sourced_orders_in_one_file() {
    let path = fresh_path();
    let config = Config::new(format!("sqlite://{}", path.display()));
    let projection = format!(
        "order-projection-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let report = event_sourced_orders::run(&config, &projection)
        .await
        .unwrap_or_else(|e| panic!("event_sourced_orders on sqlite: {e}"));
    assert_eq!(
        (report.conflicts, report.events, report.applied),
        (1, 7, 7),
        "{report:?}"
    );
    assert_eq!(report.duplicates_skipped, 7, "{report:?}");
    // The store, its outbox and the projection's inbox are all in the one file.
    let store = open(&path).await;
    assert_eq!(store.read_all(0, 100).await.expect("read_all").len(), 7);
    assert_eq!(
        store.pending().await.expect("pending"),
        0,
        "the outbox was relayed"
    );
    let inbox_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM longshore_inbox")
        .fetch_one(store.pool())
        .await
        .expect("inbox rows");
    assert!(
        inbox_rows >= 7,
        "the projection's inbox is in the file: {inbox_rows}"
    );
    store.close().await;
    let _ = std::fs::remove_file(&path);
}
