//! A consumer *process* SIGKILLed mid-stream and started again (fault
//! `consumer-process-killed`), on every broker backend (memory keeps nothing across a process,
//! so it has no cell).
//!
//! The consumer is this test binary run again as a child, for the one test
//! `child_consumer_process`, which does nothing unless `LONGSHORE_KILL_CHILD_URL` is set. The
//! child serves a subscription on the shared local broker with the longshore `Consumer`
//! runtime and appends each handled id to a file before its handler returns `Ok` (so the
//! file is at-least-once, like the acks). The parent publishes a known set of ids, SIGKILLs
//! the child once a third of them were handled, starts a new child on the same subscription,
//! and waits (bounded) until every confirmed id is in the file. Lost (confirmed, never
//! handled) must be 0; duplicates (redelivered after the kill) are reported. It kills only its
//! own children; a child also ends when its stdin (held by the parent) closes.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use longshore::{Consumer, Event, EventPublisher, HandlerError, Subscription};
use longshore_testkit::fault::{self, FaultReport};
use longshore_testkit::Names;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// The fault's name in the matrix.
const FAULT: &str = "consumer-process-killed";

/// The event type the child handles.
const EVENT_TYPE: &str = "kill_probe";

/// How long the parent waits for the first child to handle a third of the ids, and after the
/// last publish for every confirmed id (a Postgres lease of the killed consumer runs out after
/// 30 s, a Kafka group rebalances after the session timeout).
const WAIT: Duration = Duration::from_secs(120);

/// Most time a child lives, in case its parent vanished without closing its stdin.
const CHILD_LIMIT: Duration = Duration::from_secs(600);

/// The child: consumes until its stdin closes (or [`CHILD_LIMIT`]). A no-op in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_consumer_process() {
    let Ok(url) = std::env::var("LONGSHORE_KILL_CHILD_URL") else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} for the child"));
    let (sub, topic, out) = (
        var("LONGSHORE_KILL_CHILD_SUB"),
        var("LONGSHORE_KILL_CHILD_TOPIC"),
        var("LONGSHORE_KILL_CHILD_OUT"),
    );
    let ls = longshore::connect(&url).await.expect("child connects");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .expect("child opens the id file");
    let file = Arc::new(Mutex::new(file));
    let consumer = Consumer::new(ls.subscriber.clone(), Subscription::new(sub, [topic]))
        .on_event(EVENT_TYPE, move |ctx| {
            let file = file.clone();
            async move {
                let id = ctx.event.data["id"].as_str().unwrap_or("?").to_string();
                // One write(2) per line on an O_APPEND file: whole lines, in the page cache
                // (which survives the process) before the handler returns and the ack goes.
                let mut f = file
                    .lock()
                    .map_err(|_| HandlerError::transient("id file lock"))?;
                f.write_all(format!("{id}\n").as_bytes())
                    .and_then(|()| f.flush())
                    .map_err(HandlerError::transient)
            }
        })
        .start()
        .await
        .expect("child starts its consumer");
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(CHILD_LIMIT, async {
        while stdin.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await;
    consumer.shutdown(Duration::from_secs(5)).await;
}

/// Starts a child consumer; its stdin is a pipe the parent holds.
fn spawn_child(url: &str, sub: &str, topic: &str, out: &Path) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .args(["child_consumer_process", "--exact", "--nocapture"])
        .env("LONGSHORE_KILL_CHILD_URL", url)
        .env("LONGSHORE_KILL_CHILD_SUB", sub)
        .env("LONGSHORE_KILL_CHILD_TOPIC", topic)
        .env("LONGSHORE_KILL_CHILD_OUT", out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the child consumer")
}

/// Each id in the file and how often it was handled.
fn handled(out: &Path) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        *seen.entry(line.to_string()).or_default() += 1;
    }
    seen
}

/// Polls the file (bounded by `limit`) until `done` holds; false if it never did.
async fn until(
    out: &Path,
    limit: Duration,
    done: impl Fn(&HashMap<String, usize>) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done(&handled(out)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Removes the id file on drop (kept when the test fails).
struct IdFile(PathBuf);

impl Drop for IdFile {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("handled ids kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

async fn cell(backend: &str, url: String) {
    let attempt = tokio::time::timeout(Duration::from_secs(30), longshore::connect(&url))
        .await
        .unwrap_or_else(|_| Err(longshore::Error::Config("connect timed out".into()).into()));
    let Some(ls) = longshore_testkit::require_broker(backend, &url, attempt) else {
        return;
    };
    let names = Names::new();
    let (topic, sub) = (names.topic("kill"), names.sub("kill"));
    longshore_testkit::within(
        "the subscription",
        ls.subscriber
            .ensure_subscription(&Subscription::new(sub.clone(), [topic.clone()])),
    )
    .await
    .expect("ensure the subscription");
    let out = IdFile(std::env::temp_dir().join(format!("longshore-kill-{}.ids", names.prefix())));
    let count = fault::message_count();
    let mut first = spawn_child(&url, &sub, &topic, &out.0);

    let publisher = EventPublisher::new(ls.publisher.clone());
    let publishing = async {
        let (mut confirmed, mut errors) = (HashSet::new(), Vec::new());
        for i in 0..count {
            let id = format!("{}-{i}", names.prefix());
            let event = Event::new(EVENT_TYPE, serde_json::json!({ "id": id }));
            match publisher.publish_to(&topic, &event).await {
                Ok(()) => {
                    confirmed.insert(id);
                }
                Err(e) => fault::note(&mut errors, e.to_string()),
            }
        }
        (confirmed, errors)
    };
    let killing = async {
        let third = until(&out.0, WAIT, |s| s.len() >= count / 3).await;
        assert!(
            third,
            "{backend}: the first consumer never handled a third of the ids"
        );
        first.kill().await.expect("SIGKILL the first consumer");
        let at_kill: usize = handled(&out.0).values().sum();
        let killed = Instant::now();
        let second = spawn_child(&url, &sub, &topic, &out.0);
        // Recovery: from the kill to the first id the new process handled.
        let resumed = until(&out.0, WAIT, |s| s.values().sum::<usize>() > at_kill).await;
        (second, resumed.then(|| killed.elapsed()))
    };
    let ((confirmed, errors), (second, recovery)) = tokio::join!(publishing, killing);
    until(&out.0, WAIT, |s| {
        confirmed.iter().all(|id| s.contains_key(id))
    })
    .await;
    drop(second);
    let seen = handled(&out.0);
    let mut report: FaultReport =
        fault::report_of(backend, FAULT, count, &confirmed, &seen, errors);
    report.recovery_ms = recovery.map(|d| d.as_millis());
    println!("{report:?}");
    report.record();
    let _ = tokio::time::timeout(Duration::from_secs(10), ls.close()).await;
    report.assert_nothing_lost();
    assert_eq!(
        report.confirmed, count,
        "{backend}: publishes failed: {report:?}"
    );
}

/// The shared Kafka broker, with the session timeout the broker script asks for (tansu answers
/// a rejoin only after the dead member's session ran out).
#[cfg(feature = "kafka")]
fn kafka_url() -> String {
    let url = common::kafka_url();
    match std::env::var("KAFKA_SESSION_TIMEOUT_MS") {
        Ok(ms) if !ms.is_empty() => format!("{url}?session_timeout_ms={ms}"),
        _ => url,
    }
}

#[cfg(feature = "rabbitmq")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_consumer_process_killed() {
    cell("rabbitmq", common::amqp_url()).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_consumer_process_killed() {
    // A killed consumer's unacked messages come back after ack_wait: 5 s, not 30.
    cell("nats", format!("{}?ack_wait=5s", common::nats_url())).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_consumer_process_killed() {
    let schema = &uuid::Uuid::new_v4().simple().to_string()[..10];
    cell(
        "postgres",
        format!("{}?schema=kill{schema}", common::postgres_url()),
    )
    .await;
}

#[cfg(feature = "kafka")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_process_killed() {
    cell("kafka", kafka_url()).await;
}
