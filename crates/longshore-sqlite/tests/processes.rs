//! Several processes on one file: competing consumers in child processes, and children
//! SIGKILLed mid-append and mid-consume (nothing confirmed is lost, the file stays intact).
//! Children are this test binary run again with [`ROLE`] set; each is bounded and killed only
//! by the test that started it.
//!
//! The two SIGKILL tests are SQLite's cells of the fault matrix (RELIABILITY.md): they publish
//! or append `LONGSHORE_RELIABILITY_N` messages (default 400) and, when
//! `LONGSHORE_RELIABILITY_OUT` names a directory, write their row there as the other cells do
//! (`longshore_testkit::fault::FaultReport`), before asserting.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_core::Inbox;
use longshore_core::{Broker, Event, EventStore, ExpectedVersion, Message, Subscription};
use longshore_sqlite::sqlx;
use longshore_sqlite::{SqliteBroker, SqliteConfig, SqliteStore};
use longshore_testkit::fault::{self, FaultReport};

/// `<role> <path>` in a child process.
const ROLE: &str = "LONGSHORE_SQLITE_CHILD";
const SUB: &str = "work";
const BOUND: Duration = Duration::from_secs(60);
/// Most time a consuming child lives.
const SERVE_LIMIT: Duration = Duration::from_secs(900);

/// How long a fault cell's child may take for `n` messages: [`BOUND`], plus 20 ms a message
/// (the matrix runs 10,000 on a shared machine; a consuming child acks one at a time).
fn cell_bound(n: usize) -> Duration {
    BOUND + Duration::from_millis(20).saturating_mul(u32::try_from(n).unwrap_or(u32::MAX))
}

fn config(path: &Path) -> SqliteConfig {
    SqliteConfig::new(path)
        .with_visibility_timeout(Duration::from_secs(2))
        .with_poll_interval(Duration::from_millis(20))
}

/// The child's body; does nothing in a normal test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child() {
    let Ok(spec) = std::env::var(ROLE) else {
        return;
    };
    let (role, path) = spec.split_once(' ').expect("role and path");
    let broker = SqliteBroker::connect(config(Path::new(path)))
        .await
        .expect("child connect");
    match role {
        // `consume` stops once every message is acknowledged; `serve` only when killed (or
        // after BOUND), for a parent that is still publishing.
        "consume" | "serve" => {
            // A safety limit only: a `serve` child is killed by its parent long before.
            let until = Instant::now() + SERVE_LIMIT;
            let sub = broker.subscriber();
            let mut stream = sub
                .subscribe(&Subscription::new(SUB, ["jobs.#"]).with_prefetch(1))
                .await
                .expect("subscribe");
            while Instant::now() < until {
                // Stop once every message is acknowledged by someone (durable state, not time).
                if role == "consume" && sub.lag(SUB).await.expect("lag") == Some(0) {
                    return;
                }
                let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
                if let Ok(Some(Ok(d))) = next {
                    let id = d.message().id.clone();
                    // Recorded before the ack, so a kill between the two loses nothing
                    // unaccounted: the message is then delivered again.
                    broker
                        .store()
                        .inbox()
                        .mark_processed("child", &id)
                        .await
                        .expect("inbox");
                    d.ack().await.expect("ack");
                    println!("acked {id}");
                }
            }
        }
        "append" => {
            let store = broker.store();
            // Bounded by the parent's kill; `sending` before each append, so the parent counts
            // the one in flight when it is killed.
            for i in 0u64..10_000_000 {
                let e = Event::new("tick", serde_json::json!({"i": i}));
                println!("sending {i}");
                store
                    .append("ticks", ExpectedVersion::Exact(i), vec![e])
                    .await
                    .expect("append");
                println!("confirmed {i}");
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn spawn(role: &str, path: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, format!("{role} {}", path.display()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child")
}

/// Reads the child's `<word> <value>` lines until `stop` says so or the output ends.
fn lines(child: &mut Child, word: &str, mut stop: impl FnMut(usize) -> bool) -> Vec<String> {
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut seen = Vec::new();
    read_words(&mut out, |w, v| {
        if w == word {
            seen.push(v.to_string());
            return stop(seen.len());
        }
        false
    });
    seen
}

/// Feeds each `<word> <value>` line of a child (`acked`, `sending`, `confirmed`) to `stop`
/// until it returns true or the output ends.
fn read_words(out: &mut BufReader<ChildStdout>, mut stop: impl FnMut(&str, &str) -> bool) {
    let mut line = String::new();
    loop {
        line.clear();
        if !matches!(out.read_line(&mut line), Ok(n) if n > 0) {
            return;
        }
        // libtest writes `test child ... ` before the child's first line, on the same line.
        for word in ["acked ", "sending ", "confirmed "] {
            if let Some(at) = line.find(word) {
                if stop(word.trim(), line[at + word.len()..].trim()) {
                    return;
                }
            }
        }
    }
}

async fn integrity_ok(path: &Path) {
    let store = SqliteStore::connect(config(path)).await.expect("reopen");
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.pool())
        .await
        .expect("integrity_check");
    assert_eq!(check, "ok");
    store.close().await;
}

async fn publish_jobs(path: &Path, n: usize) -> (SqliteBroker, BTreeSet<String>) {
    let broker = SqliteBroker::connect(config(path)).await.expect("connect");
    broker
        .subscriber()
        .ensure_subscription(&Subscription::new(SUB, ["jobs.#"]))
        .await
        .expect("subscription");
    let ids: BTreeSet<String> = (0..n).map(|i| format!("job-{i:03}")).collect();
    let batch = ids
        .iter()
        .map(|id| Message::new(id.as_bytes().to_vec()).with_id(id.clone()))
        .collect();
    broker
        .publisher()
        .publish_batch("jobs.run", batch)
        .await
        .expect("publish");
    (broker, ids)
}

async fn in_child<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    in_child_within(BOUND, f).await
}

async fn in_child_within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    tokio::time::timeout(limit, tokio::task::spawn_blocking(f))
        .await
        .expect("children finish in bounded time")
        .expect("child thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_in_three_processes_share_the_work_once() {
    let path: PathBuf = common::fresh_path();
    let (broker, ids) = publish_jobs(&path, 60).await;
    let p = path.clone();
    let got = in_child(move || {
        let mut children: Vec<Child> = (0..3).map(|_| spawn("consume", &p)).collect();
        let mut all = Vec::new();
        for c in &mut children {
            all.push(lines(c, "acked", |_| false));
        }
        for c in &mut children {
            assert!(c.wait().expect("wait").success(), "a consumer failed");
        }
        all
    })
    .await;
    let flat: Vec<&String> = got.iter().flatten().collect();
    println!(
        "per process: {:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(flat.len(), ids.len(), "each message acked exactly once");
    assert_eq!(flat.into_iter().cloned().collect::<BTreeSet<_>>(), ids);
    broker.close().await.expect("close");
    integrity_ok(&path).await;
}

/// Writes the cell's row (when asked) and fails unless nothing confirmed was lost.
fn report(mut r: FaultReport, recovery: Option<Duration>) {
    r.recovery_ms = recovery.map(|d| d.as_millis());
    println!("{r:?}");
    r.record();
    r.assert_nothing_lost();
}

/// Fault `process-killed-mid-append`: a child appends one event at a time (expected version
/// checked) and is SIGKILLed once half of `LONGSHORE_RELIABILITY_N` are confirmed; this
/// process then reopens the file (SQLite recovers the WAL) and appends the rest. Every
/// confirmed event is stored, versions have no gap (no torn append), the file passes
/// `integrity_check`. *Handled* counts the events stored; recovery runs from the kill to the
/// first append confirmed after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_append_loses_nothing_confirmed() {
    let n = fault::message_count().max(2) as u64;
    let path = common::fresh_path();
    SqliteStore::connect(config(&path))
        .await
        .expect("create")
        .close()
        .await;
    let p = path.clone();
    let (sending, mut confirmed, killed) = in_child_within(cell_bound(n as usize), move || {
        let mut child = spawn("append", &p);
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let (mut sending, mut confirmed) = (0_u64, HashSet::new());
        read_words(&mut out, |word, i| {
            match word {
                "sending" => sending += 1,
                "confirmed" => {
                    confirmed.insert(i.to_string());
                }
                _ => {}
            }
            confirmed.len() as u64 >= n / 2
        });
        child.kill().expect("SIGKILL our child");
        let killed = Instant::now();
        // What it wrote before dying: the append in flight, if any.
        read_words(&mut out, |word, i| {
            match word {
                "sending" => sending += 1,
                "confirmed" => {
                    confirmed.insert(i.to_string());
                }
                _ => {}
            }
            false
        });
        let _ = child.wait();
        (sending, confirmed, killed)
    })
    .await;
    assert!(confirmed.len() as u64 >= n / 2);
    // Started again: the rest, from the version the file holds.
    let store = SqliteStore::connect(config(&path)).await.expect("reopen");
    let mut recovery = None;
    let mut sent = sending;
    let mut errors = Vec::new();
    let mut next = store
        .read_stream("ticks", 1, 10_000_000)
        .await
        .expect("read")
        .len() as u64;
    while next < n {
        sent += 1;
        let e = Event::new("tick", serde_json::json!({"i": next}));
        match store
            .append("ticks", ExpectedVersion::Exact(next), vec![e])
            .await
        {
            Ok(_) => {
                confirmed.insert(next.to_string());
                recovery.get_or_insert_with(|| killed.elapsed());
                next += 1;
            }
            Err(e) => {
                fault::note(&mut errors, e.to_string());
                next = store
                    .read_stream("ticks", 1, 10_000_000)
                    .await
                    .expect("read")
                    .len() as u64;
            }
        }
    }
    let stored = store
        .read_stream("ticks", 1, 10_000_000)
        .await
        .expect("read");
    store.close().await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in &stored {
        let i = r.event.data["i"].as_u64().expect("the tick's index");
        *seen.entry(i.to_string()).or_default() += 1;
    }
    let versions: Vec<u64> = stored.iter().map(|r| r.version).collect();
    report(
        fault::report_of(
            "sqlite",
            "process-killed-mid-append",
            sent as usize,
            &confirmed,
            &seen,
            errors,
        ),
        recovery,
    );
    assert_eq!(
        versions,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "no torn append"
    );
    integrity_ok(&path).await;
}

/// Fault `consumer-process-killed`, as the other backends' cell: `LONGSHORE_RELIABILITY_N`
/// ids published one by one while a consumer child (prefetch 1) records each id in the inbox
/// before acking it; the child is SIGKILLed once a third were acked and a new child started
/// on the same file. *Handled* and *duplicated* come from the first child's inbox and the
/// second child's deliveries; recovery runs from the kill to the second child's first ack.
/// The file passes `integrity_check` afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_consume_loses_nothing() {
    let n = fault::message_count().max(3);
    let path = common::fresh_path();
    let (broker, _) = publish_jobs(&path, 0).await;
    let ids: Vec<String> = (0..n).map(|i| format!("job-{i:05}")).collect();
    let publisher = broker.publisher();
    let to_publish = ids.clone();
    let publishing = tokio::spawn(async move {
        let (mut confirmed, mut errors) = (HashSet::new(), Vec::new());
        for id in to_publish {
            let m = Message::new(id.as_bytes().to_vec()).with_id(id.clone());
            match publisher.publish("jobs.run", m).await {
                Ok(()) => {
                    confirmed.insert(id);
                }
                Err(e) => fault::note(&mut errors, e.to_string()),
            }
        }
        (confirmed, errors)
    });
    let p = path.clone();
    let killed = in_child_within(cell_bound(n), move || {
        let mut child = spawn("serve", &p);
        lines(&mut child, "acked", |k| k >= n / 3);
        child.kill().expect("SIGKILL our child");
        let _ = child.wait();
        Instant::now()
    })
    .await;
    let (confirmed, errors) = publishing.await.expect("publishing task");
    // What the first child handled (recorded before each ack), read back from the file.
    let first: BTreeSet<String> =
        sqlx::query_scalar("SELECT message_id FROM longshore_inbox WHERE consumer = 'child'")
            .fetch_all(broker.store().pool())
            .await
            .expect("inbox")
            .into_iter()
            .collect();
    // The rest, including what the dead child held leased, comes to a new consumer process.
    let p = path.clone();
    let wanted: HashSet<String> = confirmed
        .iter()
        .filter(|id| !first.contains(*id))
        .cloned()
        .collect();
    let (second, resumed) = in_child_within(cell_bound(n), move || {
        let mut child = spawn("serve", &p);
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let (mut got, mut resumed) = (Vec::new(), None);
        let mut missing = wanted;
        read_words(&mut out, |word, id| {
            if word == "acked" {
                resumed.get_or_insert_with(Instant::now);
                missing.remove(id);
                got.push(id.to_string());
            }
            missing.is_empty()
        });
        child.kill().expect("stop our second child");
        let _ = child.wait();
        (got, resumed)
    })
    .await;
    let mut seen: HashMap<String, usize> = first.iter().map(|id| (id.clone(), 1)).collect();
    for id in second {
        *seen.entry(id).or_default() += 1;
    }
    report(
        fault::report_of(
            "sqlite",
            "consumer-process-killed",
            n,
            &confirmed,
            &seen,
            errors,
        ),
        resumed.map(|t| t.duration_since(killed)),
    );
    assert_eq!(confirmed.len(), n, "every publish confirmed");
    broker.close().await.expect("close");
    integrity_ok(&path).await;
}
