//! Driving the built `longshore` binary against the brokers on 127.0.0.1.
#![allow(dead_code)]

use std::process::{Output, Stdio};
use std::time::Duration;

use futures::StreamExt;
use longshore::prelude::*;
use longshore::{Delivery, DeliveryStream, Longshore};
use tokio::process::{Child, Command};

/// The longest any awaited step may take.
pub const WAIT: Duration = Duration::from_secs(90);

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// The URL of `backend` under test (same variables as the facade's tests).
pub fn url(backend: &str) -> String {
    match backend {
        "rabbitmq" => env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        "nats" => env_or("NATS_URL", "nats://127.0.0.1:4222"),
        "postgres" => env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        "kafka" => {
            let b = env_or("KAFKA_BROKERS", "127.0.0.1:9092");
            if b.contains("://") {
                b
            } else {
                format!("kafka://{b}")
            }
        }
        "sqlite" => {
            let dir = std::env::temp_dir().join("longshore-cli-tests");
            let _ = std::fs::create_dir_all(&dir);
            let name = format!("cli-{}.db", uuid::Uuid::new_v4().simple());
            format!("sqlite://{}", dir.join(name).display())
        }
        other => panic!("no URL for {other}"),
    }
}

/// A connection for the test's own side, or `None` (skip) when the broker is not there.
pub async fn connect(backend: &str, url: &str) -> Option<Longshore> {
    longshore_testkit::require_broker(backend, url, longshore::connect(url).await)
}

/// A short unique word for names.
pub fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

/// The binary, with `url` as LONGSHORE_URL and no other longshore variables.
pub fn longshore(url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_longshore"));
    c.env("LONGSHORE_URL", url)
        .env_remove("LONGSHORE_STORE_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Runs the binary to the end.
pub async fn run(url: &str, args: &[&str]) -> Output {
    tokio::time::timeout(WAIT, longshore(url).args(args).output())
        .await
        .expect("the tool finished in time")
        .expect("the tool ran")
}

/// Runs the binary with `input` on stdin.
pub async fn run_with_stdin(url: &str, args: &[&str], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut child: Child = longshore(url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("write stdin");
    drop(stdin);
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("in time")
        .expect("ran")
}

/// stdout as JSON lines.
pub fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// stderr, trimmed.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// The next delivery of `stream`.
pub async fn next(stream: &mut DeliveryStream) -> Delivery {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a delivery in time")
        .expect("stream open")
        .expect("delivery")
}

/// Publishes `n` events to `topic`, receives them on `stream` and dead-letters each with
/// `reason(i)`. Returns their ids in publish order.
pub async fn dead_letter(
    ls: &Longshore,
    stream: &mut DeliveryStream,
    topic: &str,
    n: usize,
    reason: impl Fn(usize) -> &'static str,
) -> Vec<String> {
    let publisher = EventPublisher::new(ls.publisher.clone());
    let events: Vec<Event> = (0..n)
        .map(|i| Event::new("payment_requested", serde_json::json!({ "n": i })))
        .collect();
    publisher
        .publish_batch_to(topic, &events)
        .await
        .expect("publish");
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    for _ in 0..n {
        let d = next(stream).await;
        let i = ids
            .iter()
            .position(|id| *id == d.message().id)
            .expect("ours");
        d.dead_letter_after(reason(i), 3)
            .await
            .expect("dead letter");
    }
    ids
}
