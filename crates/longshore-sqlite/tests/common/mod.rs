//! Shared helpers of the integration tests: one fresh database file per test, in a directory
//! of the system's temp dir; files older than an hour (left by earlier runs) are removed.
#![allow(dead_code)]

pub mod raw;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Files of earlier runs older than this are removed.
const KEEP: Duration = Duration::from_secs(3600);

/// The directory holding the tests' files.
pub fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join("longshore-sqlite-tests");
    std::fs::create_dir_all(&dir).expect("test directory");
    dir
}

/// Removes files of earlier runs (best effort).
fn prune() {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > KEEP);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A fresh database path (the file does not exist yet).
pub fn fresh_path() -> PathBuf {
    prune();
    dir().join(format!("{}.db", uuid::Uuid::new_v4().simple()))
}

/// `sqlite://` + a fresh absolute path (so the URL names no host: `sqlite:///tmp/…`).
pub fn fresh_url() -> String {
    format!("sqlite://{}", fresh_path().display())
}
