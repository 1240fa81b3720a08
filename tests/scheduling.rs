//! Scheduled messages across processes, on every compiled-in backend:
//! - a child process schedules a message and is killed (SIGKILL) as soon as `publish_after`
//!   returned: the message still arrives, once, not before its time;
//! - the `payment_timeout` example (orders cancelled unless paid in time) runs by URL.
//!
//! Each test checks its broker first: under `CI=true` an unreachable broker fails, elsewhere
//! the test is skipped with a printed reason. Names are fresh per run.

mod common;

#[allow(dead_code)]
#[path = "../examples/payment_timeout.rs"]
mod payment_timeout;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use longshore::prelude::*;

/// The child's environment: the URL and topic to schedule on (set only for the child).
const CHILD_URL: &str = "LONGSHORE_SCHEDULING_CHILD_URL";
const CHILD_TOPIC: &str = "LONGSHORE_SCHEDULING_CHILD_TOPIC";
/// How far ahead the child schedules.
const AHEAD: Duration = Duration::from_secs(2);

/// Not a test of its own: the body of the child process (does nothing unless [`CHILD_URL`]
/// is set, as it is only by [`scheduled_by_a_killed_process`]). Schedules one message, says
/// so on stdout with the due time, and waits to be killed.
#[tokio::test]
async fn child_schedules_and_waits() {
    let (Ok(url), Ok(topic)) = (std::env::var(CHILD_URL), std::env::var(CHILD_TOPIC)) else {
        return;
    };
    let ls = longshore::connect(&url).await.expect("child connects");
    let due = Utc::now() + chrono::Duration::from_std(AHEAD).expect("delay");
    let event = Event::new(
        "reminder",
        serde_json::json!({"note": "from a killed process"}),
    );
    EventPublisher::new(ls.publisher.clone())
        .publish_at(&topic, &event, due)
        .await
        .expect("publish_at");
    println!("SCHEDULED {} {}", event.id, due.to_rfc3339());
    // Killed by the parent from here on; the bound only keeps an orphan from living forever.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// A child process schedules a message on `url` and is killed right after `publish_at`
/// returned; this process receives it once, after its due time.
async fn scheduled_by_a_killed_process(url: &str) {
    if !common::reachable(url).await {
        return;
    }
    let ls = longshore::connect(url).await.expect("connect");
    let run = Uuid::new_v4().simple().to_string()[..8].to_string();
    let topic = format!("sched{run}.reminders");
    let subscription = Subscription::new(format!("sched-kill-{run}"), [topic.clone()]);
    ls.subscriber
        .ensure_subscription(&subscription)
        .await
        .expect("ensure");

    let exe = std::env::current_exe().expect("this test binary");
    let mut child = Command::new(exe)
        .args(["child_schedules_and_waits", "--exact", "--nocapture"])
        .env(CHILD_URL, url)
        .env(CHILD_TOPIC, &topic)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let due = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("SCHEDULED ").map(str::to_string))
    });
    let due = tokio::time::timeout(Duration::from_secs(60), due)
        .await
        .ok()
        .and_then(|joined| joined.ok().flatten());
    // Killed whatever happened, so no child outlives the test.
    let _ = child.kill();
    let _ = child.wait();
    let line = due.expect("the child scheduled its message");
    let (scheduled_id, due) = line.split_once(' ').expect("id and due time");
    let scheduled_id = scheduled_id.to_string();
    let due: DateTime<Utc> = due.parse().expect("due time");

    let (consumer, mut rx) = common::arrivals(&ls, subscription.clone(), "reminder").await;
    let (id, at) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the orphaned schedule arrives")
        .expect("reader running");
    assert_eq!(id, scheduled_id);
    assert!(at >= due, "delivered at {at}, before its time {due}");
    let again = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(!matches!(again, Ok(Some(_))), "delivered twice: {again:?}");
    consumer.shutdown(Duration::from_secs(10)).await;
    let _ = ls.subscriber.close().await;
    let _ = ls.publisher.close().await;
}

/// The example on `url`: exactly the unpaid orders are cancelled, none before its deadline.
async fn payment_timeout_on(url: &str) {
    if !common::reachable(url).await {
        return;
    }
    let report = payment_timeout::run(url, Duration::from_secs(1))
        .await
        .unwrap_or_else(|e| panic!("payment_timeout on {url}: {e}"));
    assert_eq!(report.cancelled.len(), 3, "{report:?}");
    // Every paid order's deadline was withdrawn or came and was seen paid, never both.
    assert_eq!(report.withdrawn + report.paid_in_time, 3, "{report:?}");
}

#[tokio::test]
async fn payment_timeout_memory() {
    payment_timeout_on("memory://").await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn scheduled_by_a_killed_process_rabbitmq() {
    scheduled_by_a_killed_process(&common::amqp_url()).await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn payment_timeout_rabbitmq() {
    payment_timeout_on(&common::amqp_url()).await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn scheduled_by_a_killed_process_nats() {
    scheduled_by_a_killed_process(&common::nats_url()).await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn payment_timeout_nats() {
    payment_timeout_on(&common::nats_url()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn scheduled_by_a_killed_process_kafka() {
    scheduled_by_a_killed_process(&common::kafka_url()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn payment_timeout_kafka() {
    payment_timeout_on(&common::kafka_url()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn scheduled_by_a_killed_process_postgres() {
    scheduled_by_a_killed_process(&common::postgres_url()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn payment_timeout_postgres() {
    payment_timeout_on(&common::postgres_url()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn scheduled_by_a_killed_process_sqlite() {
    scheduled_by_a_killed_process(&common::sqlite_url()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn payment_timeout_sqlite() {
    payment_timeout_on(&common::sqlite_url()).await;
}
