//! Restarts of the local nats-server: in the middle of a run of 10,000 messages (every
//! message whose publish returned Ok is delivered, and consumers resume by themselves), and a
//! short outage under a publisher looping one publish at a time (publishing resumes soon
//! after the server is back, not seconds later).
//!
//! Restarts the local server exactly as DESIGN.md starts it; a guard starts it again even
//! if the test fails. Runs only against the default local server (127.0.0.1:4222). The
//! scenarios hold one lock, so they never restart the server under each other when the
//! harness runs them as threads of one process (`cargo test`).

mod common;

use std::collections::HashSet;
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_core::{Broker, Health, Message, Subscription};
use longshore_testkit::Names;

const START: &[&str] = &[
    "--start",
    "--oknodo",
    "--background",
    "--exec",
    "/usr/sbin/nats-server",
    "--",
    "-a",
    "127.0.0.1",
    "-p",
    "4222",
    "-js",
    "-sd",
    "/var/lib/nats-server",
    "-l",
    "/var/log/nats-server.log",
];

fn port_open() -> bool {
    TcpStream::connect_timeout(
        &"127.0.0.1:4222".parse().expect("addr"),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// The pid of the nats-server serving 127.0.0.1:4222.
fn server_pid() -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("nats-server"))
            && args.windows(2).any(|w| w[0] == "-p" && w[1] == "4222")
        {
            return Some(pid);
        }
    }
    None
}

/// Starts the server; returns when it accepts connections (polled every 10 ms, so the instant
/// is close to the real one), or `None` after 30 s.
fn start_server() -> Option<Instant> {
    let status = Command::new("start-stop-daemon").args(START).status();
    if let Err(e) = status {
        eprintln!("start-stop-daemon failed: {e}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if port_open() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Starts the server again on drop if it is not answering (also when the test panics).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        if !port_open() {
            let _ = start_server();
        }
    }
}

/// Stops the server (SIGTERM, wait for the process to end). Panics (the guard still
/// restores) if that fails.
fn stop_server(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -TERM {pid} failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "nats-server {pid} did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the server with the command it was started with; panics if it does not answer.
/// Returns when it accepted a connection.
fn start_server_checked() -> Instant {
    start_server().expect("nats-server did not come back on 127.0.0.1:4222")
}

/// One restart at a time in this process.
static SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether this run may restart the server: the local one, started as in DESIGN.md. Fails
/// under CI when it may not; elsewhere prints why the test skips.
fn restartable() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    let url = common::url();
    let local = url.trim_end_matches('/') == "nats://127.0.0.1:4222";
    let restartable =
        local && std::path::Path::new("/usr/sbin/nats-server").exists() && server_pid().is_some();
    if !restartable {
        assert!(!ci, "the restart test needs the local nats-server on 127.0.0.1:4222 started as in DESIGN.md");
        eprintln!("SKIPPED: no local nats-server on 127.0.0.1:4222 that this test can restart");
    }
    restartable
}

/// Polls `health()` until `want` holds (the client's connection state has no event the test
/// can await), for at most 60 s.
async fn health_until(
    broker: &longshore_nats::NatsBroker,
    want: impl Fn(&Health) -> bool,
) -> Health {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let health = broker.health().await;
        if want(&health) {
            return health;
        }
        assert!(Instant::now() < deadline, "health stayed {health:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_loses_no_acked_message() {
    let _alone = SERVER.lock().await;
    if !restartable() {
        return;
    }
    let _restore = Restore;
    let mut config = common::config();
    config.publish_timeout = Duration::from_secs(60);
    let Some(broker) = common::broker_with(config).await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("restart");
    let sub = Subscription::new(n.sub("restart"), [topic.clone()]).with_prefetch(256);
    let subscriber = broker.subscriber();
    subscriber.ensure_subscription(&sub).await.expect("ensure");

    // Consumer: records every delivered id (duplicates allowed: at-least-once).
    let received = Arc::new(Mutex::new(HashSet::new()));
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let rec = received.clone();
    let consumer = tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            match item {
                Ok(d) => {
                    let id = d.message().id.clone();
                    // An ack lost in the restart only means a redelivery.
                    let _ = d.ack().await;
                    rec.lock().expect("lock").insert(id);
                }
                Err(e) => eprintln!("stream error (recovering): {e}"),
            }
        }
    });

    // Publisher: 10,000 messages in batches; every Ok is a promise.
    const TOTAL: usize = 10_000;
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let publisher = broker.publisher();
    let conf = confirmed.clone();
    let topic2 = topic.clone();
    let producer = tokio::spawn(async move {
        let mut pending: Vec<Message> = (0..TOTAL)
            .map(|i| Message::new(format!("m{i}").into_bytes()))
            .collect();
        let mut rounds = 0;
        while !pending.is_empty() && rounds < 1000 {
            rounds += 1;
            let batch: Vec<Message> = pending.drain(..pending.len().min(250)).collect();
            let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
            match publisher.publish_batch(&topic2, batch).await {
                Ok(()) => conf.lock().expect("lock").extend(ids),
                Err(e) => {
                    let failed: HashSet<usize> = e.failed.iter().map(|f| f.index).collect();
                    conf.lock().expect("lock").extend(
                        ids.into_iter()
                            .enumerate()
                            .filter(|(i, _)| !failed.contains(i))
                            .map(|(_, id)| id),
                    );
                    // Publish the unconfirmed ones again (same ids: stored once).
                    let mut retry: Vec<Message> = e.failed.into_iter().map(|f| f.message).collect();
                    retry.append(&mut pending);
                    pending = retry;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            // Give the restart a chance to land mid-run.
            tokio::task::yield_now().await;
        }
        assert!(
            pending.is_empty(),
            "{} messages never confirmed",
            pending.len()
        );
    });

    // Restart once about a third has been confirmed.
    let deadline = Instant::now() + Duration::from_secs(120);
    while confirmed.lock().expect("lock").len() < TOTAL / 3 {
        assert!(
            Instant::now() < deadline,
            "publishing stalled before the restart"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = server_pid().expect("nats-server pid");
    let before = confirmed.lock().expect("lock").len();
    let health = broker.health().await;
    assert!(health.is_ready(), "before the restart: {health:?}");
    tokio::task::spawn_blocking(move || stop_server(pid))
        .await
        .expect("stop");
    let down = health_until(&broker, |h| !h.connected).await;
    assert!(!down.is_ready(), "server stopped: {down:?}");
    let detail = down.detail.unwrap_or_default();
    assert!(detail.contains("not connected"), "{detail}");
    tokio::task::spawn_blocking(start_server_checked)
        .await
        .expect("restart");
    eprintln!("restarted nats-server after {before} confirmed publishes");
    let up = health_until(&broker, |h| h.is_ready()).await;
    assert!(up.detail.is_none(), "{up:?}");

    tokio::time::timeout(Duration::from_secs(180), producer)
        .await
        .expect("producer finished in time")
        .expect("producer");
    let confirmed: Vec<String> = confirmed.lock().expect("lock").clone();
    assert_eq!(confirmed.len(), TOTAL);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = {
            let got = received.lock().expect("lock");
            confirmed.iter().filter(|id| !got.contains(*id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} confirmed messages never delivered after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    subscriber.close().await.expect("close");
    assert!(!subscriber.health().await.is_ready(), "closed");
    tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .expect("consumer ends")
        .expect("consumer");
}

/// The instant of the next confirmed publish, waiting at most 60 s.
async fn next_ok(confirmed: &mut tokio::sync::mpsc::UnboundedReceiver<Instant>) -> Instant {
    tokio::time::timeout(Duration::from_secs(60), confirmed.recv())
        .await
        .expect("a publish confirmed within 60 s")
        .expect("publisher running")
}

/// How long the server stays down in the outage scenario (issue #16: a ~2.4 s outage stalled
/// publishing for 4-5 s).
const OUTAGE: Duration = Duration::from_millis(2400);

/// Most time from the server accepting connections again to the next confirmed publish.
/// With async-nats's default reconnect backoff (2^n ms, up to 4 s) the attempts around a
/// 2.4 s outage fall at 2.05 s and 4.09 s, so publishing resumed ~1.7 s after the server was
/// back (4.1 s after it stopped); with the adapter's backoff (at most `reconnect_delay_max`,
/// 250 ms) it resumes in ~0.2 s. One second catches the first and leaves the second room.
const RESUME_WITHIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publishing_resumes_soon_after_a_short_outage() {
    let _alone = SERVER.lock().await;
    if !restartable() {
        return;
    }
    let _restore = Restore;
    let Some(broker) = common::broker_with(common::config()).await else {
        return;
    };
    let topic = Names::new().topic("outage");

    // Publisher: one publish at a time, the instant of each Ok sent to the test.
    let (confirmed_tx, mut confirmed) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = broker.publisher();
    let stopping = stop.clone();
    let producer = tokio::spawn(async move {
        let mut failed = Vec::new();
        for i in 0.. {
            if stopping.load(Ordering::Acquire) {
                break;
            }
            let message = Message::new(format!("outage-{i}").into_bytes());
            match publisher.publish(&topic, message).await {
                Ok(()) => {
                    if confirmed_tx.send(Instant::now()).is_err() {
                        break;
                    }
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        failed
    });
    for _ in 0..20 {
        next_ok(&mut confirmed).await;
    }

    let pid = server_pid().expect("nats-server pid");
    tokio::task::spawn_blocking(move || stop_server(pid))
        .await
        .expect("stop");
    tokio::time::sleep(OUTAGE).await;
    let up = tokio::task::spawn_blocking(start_server_checked)
        .await
        .expect("restart");
    // The first publish confirmed after the server answered again (an Ok from before the
    // stop may still be queued).
    let resumed = loop {
        let at = next_ok(&mut confirmed).await;
        if at >= up {
            break at - up;
        }
    };
    eprintln!("publishing resumed {resumed:?} after nats-server accepted connections again");
    stop.store(true, Ordering::Release);
    drop(confirmed);
    let failed = tokio::time::timeout(Duration::from_secs(60), producer)
        .await
        .expect("publisher stops")
        .expect("publisher");
    assert!(
        resumed < RESUME_WITHIN,
        "publishing resumed only {resumed:?} after the server was back (outage {OUTAGE:?}); failed publishes: {failed:?}"
    );
    assert!(failed.is_empty(), "publishes failed: {failed:?}");
}
