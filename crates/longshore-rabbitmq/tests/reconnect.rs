//! Connection recovery against the real broker: all connections of the broker handle under test
//! are force-closed with `rabbitmqctl` at 1/3 and 1/2 of 10,000 messages while they flow; every
//! confirmed message must still be consumed at least once, and no publish may end unconfirmed.
//!
//! By default the test closes the connections whose client name is its own (so that tests
//! running in parallel, e.g. under nextest, keep theirs); `LONGSHORE_RECONNECT_CLOSE=all` makes
//! it run `rabbitmqctl close_all_connections --global` instead (run it alone then).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::{Broker, Message, Subscription};
use longshore_testkit::Names;

const TOTAL: usize = 10_000;
const BATCH: usize = 100;
/// Messages published after a cut starts before the test waits for the close to finish.
const SLACK: usize = 1_000;
/// The whole test must finish within this, or it fails.
const LIMIT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_survive_two_forced_disconnects() {
    let connection_name = format!("longshore-reconnect-{}", uuid::Uuid::new_v4().simple());
    let name = connection_name.clone();
    let Some(broker) = common::broker_with(move |mut c| {
        c.connection_name = name;
        c
    })
    .await
    else {
        return;
    };
    if let Err(e) = tokio::process::Command::new("rabbitmqctl")
        .arg("--help")
        .output()
        .await
    {
        assert!(!common::ci(), "rabbitmqctl is required under CI: {e}");
        eprintln!("SKIPPED: rabbitmqctl not available ({e})");
        return;
    }
    let n = Names::new();
    let topic = n.topic("reconnect");
    let subscriber = broker.subscriber();
    let sub = Subscription::new(n.sub("reconnect"), [topic.clone()]).with_prefetch(200);
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let consumer = tokio::spawn(async move {
        let mut stream_errors = 0usize;
        while let Some(item) = stream.next().await {
            match item {
                Ok(d) => {
                    let id = d.message().id.clone();
                    // An ack on a channel that died is an error; the broker redelivers.
                    let _ = d.ack().await;
                    if seen_tx.send(id).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    assert!(e.is_retryable(), "non-retryable stream error: {e}");
                    stream_errors += 1;
                }
            }
        }
        stream_errors
    });

    let publisher = broker.publisher();
    let run = async {
        let mut confirmed: HashSet<String> = HashSet::new();
        let mut unconfirmed = 0usize;
        let mut cuts = vec![TOTAL / 2, TOTAL / 3];
        let mut sent = 0;
        // The close runs beside the publishing, so it lands on batches in flight; it is
        // awaited before the next cut (or the end).
        let mut closing: Option<tokio::task::JoinHandle<Result<usize, String>>> = None;
        let mut closed = 0usize;
        let mut cut_at = 0usize;
        while sent < TOTAL {
            // Let at most `SLACK` messages go out after a cut began before waiting for the close
            // to finish, so each close lands while batches are in flight, not after the end.
            if sent >= cut_at + SLACK {
                if let Some(pending) = closing.take() {
                    closed = closed
                        .saturating_add(pending.await.expect("task").expect("close connections"));
                }
            }
            if cuts.last().is_some_and(|&c| sent >= c) {
                cut_at = sent;
                cuts.pop();
                if let Some(previous) = closing.take() {
                    closed = closed
                        .saturating_add(previous.await.expect("task").expect("close connections"));
                }
                closing = Some(tokio::spawn(common::close_connections(
                    connection_name.clone(),
                )));
            }
            let batch: Vec<Message> = (sent..sent + BATCH)
                .map(|i| Message::new(format!("m{i}").into_bytes()))
                .collect();
            let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
            match publisher.publish_batch(&topic, batch).await {
                Ok(()) => confirmed.extend(ids),
                Err(e) => {
                    let failed: HashSet<usize> = e.failed.iter().map(|f| f.index).collect();
                    unconfirmed += failed.len();
                    for (i, id) in ids.into_iter().enumerate() {
                        if !failed.contains(&i) {
                            confirmed.insert(id);
                        }
                    }
                }
            }
            sent += BATCH;
        }
        if let Some(last) = closing.take() {
            closed = closed.saturating_add(last.await.expect("task").expect("close connections"));
        }
        assert!(closed >= 2, "rabbitmqctl closed the connection at each cut");
        let mut consumed: HashSet<String> = HashSet::new();
        let mut deliveries = 0usize;
        while !confirmed.is_subset(&consumed) {
            let id = seen_rx.recv().await.expect("consumer alive");
            deliveries += 1;
            consumed.insert(id);
        }
        (confirmed.len(), unconfirmed, deliveries)
    };
    let (confirmed, unconfirmed, deliveries) = tokio::time::timeout(LIMIT, run)
        .await
        .expect("every confirmed message consumed within the limit");
    println!(
        "confirmed {confirmed}, unconfirmed {unconfirmed}, deliveries {deliveries}, reconnects {}",
        broker.reconnects()
    );
    assert_eq!(confirmed + unconfirmed, TOTAL);
    // With retries on a new channel nothing should be lost to the two cuts.
    assert_eq!(unconfirmed, 0, "publishes were retried until confirmed");
    assert!(
        broker.reconnects() >= 2,
        "the connection was re-opened twice"
    );
    let health = subscriber.health().await;
    assert!(health.is_ready(), "recovered: {health:?}");
    subscriber.close().await.expect("close");
    let stream_errors = tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .expect("consumer ends after close")
        .expect("consumer task");
    assert!(stream_errors >= 1, "the outage was reported on the stream");
}

async fn rabbitmqctl(args: &[&str]) {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broker restart (`rabbitmqctl stop_app` / `start_app`) in the middle of publishing: the
/// publisher waits out the outage (retrying until `publish_timeout`), the consumer re-subscribes,
/// and every confirmed message is consumed. Ignored by default because it stops the broker for
/// everyone: `cargo test -p longshore-rabbitmq --test reconnect -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "restarts the RabbitMQ application; run by hand"]
async fn broker_restart_mid_stream() {
    let Some(broker) = common::broker_with(|c| c).await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("restart");
    let subscriber = broker.subscriber();
    let sub = Subscription::new(n.sub("restart"), [topic.clone()]).with_prefetch(50);
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            if let Ok(d) = item {
                let id = d.message().id.clone();
                let _ = d.ack().await;
                if seen_tx.send(id).is_err() {
                    break;
                }
            }
        }
    });
    let publisher = broker.publisher();
    let run = async {
        let mut confirmed = HashSet::new();
        let mut restart = None;
        for i in 0..40 {
            if i == 10 {
                restart = Some(tokio::spawn(async {
                    rabbitmqctl(&["stop_app"]).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    rabbitmqctl(&["start_app"]).await;
                }));
            }
            let batch: Vec<Message> = (0..50)
                .map(|j| Message::new(format!("m{i}-{j}").into_bytes()))
                .collect();
            let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
            publisher
                .publish_batch(&topic, batch)
                .await
                .expect("batch confirmed across the restart");
            confirmed.extend(ids);
            if i == 20 {
                if let Some(r) = restart.take() {
                    r.await.expect("restart");
                }
            }
        }
        let mut consumed = HashSet::new();
        while !confirmed.is_subset(&consumed) {
            consumed.insert(seen_rx.recv().await.expect("consumer alive"));
        }
        confirmed.len()
    };
    let confirmed = tokio::time::timeout(LIMIT, run).await.expect("bounded");
    println!(
        "confirmed {confirmed} across a broker restart, reconnects {}",
        broker.reconnects()
    );
    assert_eq!(confirmed, 2000);
    assert!(broker.reconnects() >= 1);
}
