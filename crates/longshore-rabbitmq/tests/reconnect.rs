//! Connection recovery against the real broker: every connection is force-closed with
//! `rabbitmqctl close_all_connections` while messages flow; every confirmed message must still
//! be consumed at least once. Kept in its own test binary because it closes *all* connections
//! of the broker (cargo runs test binaries one after another).

mod common;

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use longshore_core::{Message, Publisher, Subscriber, Subscription};
use longshore_testkit::Names;

const TOTAL: usize = 10_000;
const BATCH: usize = 100;
/// The whole test must finish within this, or it fails.
const LIMIT: Duration = Duration::from_secs(240);

/// Runs `rabbitmqctl close_all_connections`; `Err` if the tool is missing or fails.
async fn close_all_connections() -> Result<(), String> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "close_all_connections",
            "--global",
            "longshore reconnect test",
        ])
        .output()
        .await
        .map_err(|e| format!("rabbitmqctl not runnable: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_survive_two_forced_disconnects() {
    let Some(broker) = common::broker_with(|c| c).await else {
        return;
    };
    if let Err(e) = tokio::process::Command::new("rabbitmqctl")
        .arg("--help")
        .output()
        .await
    {
        assert!(!ci(), "rabbitmqctl is required under CI: {e}");
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
                    let id = d.message.id.clone();
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
        let mut closing: Option<tokio::task::JoinHandle<Result<(), String>>> = None;
        while sent < TOTAL {
            if cuts.last().is_some_and(|&c| sent >= c) {
                cuts.pop();
                if let Some(previous) = closing.take() {
                    previous.await.expect("task").expect("close connections");
                }
                closing = Some(tokio::spawn(close_all_connections()));
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
            last.await.expect("task").expect("close connections");
        }
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
    subscriber.close().await.expect("close");
    let stream_errors = tokio::time::timeout(Duration::from_secs(30), consumer)
        .await
        .expect("consumer ends after close")
        .expect("consumer task");
    assert!(stream_errors >= 1, "the outage was reported on the stream");
}
