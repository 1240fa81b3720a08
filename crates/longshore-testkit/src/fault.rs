//! The fault harness: publish a known set of message ids while a consumer runs, break
//! something in the middle, and count what happened to every id.
//!
//! A run reports sent, confirmed (publish returned `Ok`), handled (delivered and acked at
//! least once), lost (confirmed but never handled), duplicated (handled more than once) and
//! the time to recover (from the end of the fault to the next confirmed publish). Lost must
//! be 0; duplicates are reported, since delivery is at-least-once.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use longshore_core::{Message, Publisher, Subscriber, Subscription};
use serde::Serialize;

use crate::Names;

/// How long a run waits, after the last publish, for every confirmed id to be handled.
pub const SETTLE: Duration = Duration::from_secs(60);

/// [`SETTLE`] for [`run_during`]: consumers reconnecting to a restarted broker may take a while
/// to be served again (a RabbitMQ node recovering its queues, leases running out).
pub const SETTLE_AFTER_OUTAGE: Duration = Duration::from_secs(120);

/// Most time one run may take in all, so a broken backend cannot hang the matrix.
pub const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What one fault run found.
#[derive(Clone, Debug, Serialize)]
pub struct FaultReport {
    /// Backend name.
    pub backend: String,
    /// The fault applied.
    pub fault: String,
    /// Messages published.
    pub sent: usize,
    /// Publishes that returned `Ok`.
    pub confirmed: usize,
    /// Distinct ids the consumer received.
    pub handled: usize,
    /// Confirmed ids never handled.
    pub lost: usize,
    /// Extra deliveries of ids already received.
    pub duplicated: usize,
    /// From the end of the fault to the next confirmed publish, in milliseconds.
    pub recovery_ms: Option<u128>,
    /// Publish errors, by their text (first 5 kinds), for the reader of the table.
    pub errors: Vec<String>,
    /// Whether `health()` reported the backend not ready during the fault (`None`: not
    /// watched).
    pub health_saw_outage: Option<bool>,
    /// Whether `health()` was ready again after the fault (`None`: not watched).
    pub health_recovered: Option<bool>,
}

impl FaultReport {
    /// Fails the test unless nothing confirmed was lost.
    pub fn assert_nothing_lost(&self) {
        assert_eq!(
            self.lost, 0,
            "{} under {}: {} confirmed messages were never handled: {self:?}",
            self.backend, self.fault, self.lost
        );
    }

    /// Writes the report as one JSON line to `$LONGSHORE_RELIABILITY_OUT/<backend>-<fault>.json`
    /// when that variable names a directory (the matrix command collects them).
    pub fn record(&self) {
        let Ok(dir) = std::env::var("LONGSHORE_RELIABILITY_OUT") else {
            return;
        };
        let path = std::path::Path::new(&dir).join(format!("{}-{}.json", self.backend, self.fault));
        if let Ok(json) = serde_json::to_string(self) {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(path, json + "\n");
        }
    }
}

/// How many messages a run publishes: `LONGSHORE_RELIABILITY_N`, default 400 (quick; the
/// matrix command sets 10,000).
pub fn message_count() -> usize {
    std::env::var("LONGSHORE_RELIABILITY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

/// Runs `count` publishes on a fresh topic and subscription while a consumer acks everything,
/// calling `fault` once half of them were sent. `fault` returns when the fault is over.
pub async fn run<F, Fut>(
    backend: &str,
    fault_name: &str,
    publisher: Arc<dyn Publisher>,
    subscriber: Arc<dyn Subscriber>,
    count: usize,
    fault: F,
) -> FaultReport
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let names = Names::new();
    let topic = names.topic("fault");
    let subscription = Subscription::new(names.sub("fault"), [topic.clone()]).with_prefetch(50);
    crate::within(
        "the fault run's subscription",
        subscriber.ensure_subscription(&subscription),
    )
    .await
    .expect("ensure the subscription before the fault");
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let consumer = tokio::spawn(consume(subscriber, subscription, seen.clone()));

    let started = Instant::now();
    let mut confirmed = HashSet::new();
    let mut errors: Vec<String> = Vec::new();
    let mut fault = Some(fault);
    let mut fault_ended = None;
    let mut sent = 0;
    let mut recovery = None;
    for i in 0..count {
        if i == count / 2 {
            if let Some(f) = fault.take() {
                f().await;
                fault_ended = Some(Instant::now());
            }
        }
        let id = format!("{}-{i}", names.prefix());
        let message = Message::new(format!("fault-{i}")).with_id(id.clone());
        sent += 1;
        match tokio::time::timeout(Duration::from_secs(60), publisher.publish(&topic, message))
            .await
        {
            Ok(Ok(())) => {
                confirmed.insert(id);
                if let (Some(end), None) = (fault_ended, recovery) {
                    recovery = Some(end.elapsed());
                }
            }
            Ok(Err(e)) => note(&mut errors, e.to_string()),
            Err(_) => note(&mut errors, "publish took over 60 s".into()),
        }
        if started.elapsed() > RUN_LIMIT {
            note(&mut errors, "run limit reached: stopped publishing".into());
            break;
        }
    }
    let seen = settle_on(&confirmed, &seen, SETTLE).await;
    consumer.abort();
    let mut report = report_of(backend, fault_name, sent, &confirmed, &seen, errors);
    report.recovery_ms = recovery.map(|d| d.as_millis());
    report
}

/// Like [`run`], for faults that take the broker away for a while: `fault(k)` is started when
/// publish number `at[k]` is due and runs *beside* the publisher, which keeps publishing
/// through it (a publish in the outage either fails or is confirmed late; after a failure the
/// publisher backs off 100 ms, as a real one would, so an outage does not burn through the
/// ids in a burst). Fault `k + 1` waits for fault `k` to have ended. Waits up to
/// [`SETTLE_AFTER_OUTAGE`] after the last publish for every confirmed id. The recovery
/// reported is the longest of the faults' (end of the fault to the next confirmed publish);
/// past `count`, publishing goes on until every fault has one, `None` if one never had (the
/// broker did not come back within the run limit).
pub async fn run_during<F, Fut>(
    backend: &str,
    fault_name: &str,
    publisher: Arc<dyn Publisher>,
    subscriber: Arc<dyn Subscriber>,
    count: usize,
    at: &[usize],
    mut fault: F,
) -> FaultReport
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let names = Names::new();
    let topic = names.topic("fault");
    let subscription = Subscription::new(names.sub("fault"), [topic.clone()]).with_prefetch(50);
    crate::within(
        "the fault run's subscription",
        subscriber.ensure_subscription(&subscription),
    )
    .await
    .expect("ensure the subscription before the fault");
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let consumer = tokio::spawn(consume(subscriber, subscription, seen.clone()));

    // The faults run in their own future beside the publishing loop (no 'static needed):
    // `start` tells them when, `ended` tells the loop when each is over.
    let (start, mut due) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let (ended_tx, ended) = tokio::sync::watch::channel(Vec::<Instant>::new());
    let faults = async move {
        while let Some(k) = due.recv().await {
            fault(k).await;
            ended_tx.send_modify(|v| v.push(Instant::now()));
        }
    };
    let publishing = async {
        let started = Instant::now();
        let mut ended = ended;
        let mut confirmed = HashSet::new();
        let mut errors: Vec<String> = Vec::new();
        let mut recoveries: Vec<Option<Duration>> = vec![None; at.len()];
        let mut sent = 0;
        let mut i = 0;
        loop {
            if i >= count {
                // A fault that outlasts the planned messages (a client that reconnects and
                // drains its queue before the broker's own health check says it is back) would
                // leave no publish after it to measure recovery by: wait for the last fault to
                // end, then publish on until each fault has a confirmed publish after it.
                if recoveries.iter().all(Option::is_some) {
                    break;
                }
                let left = RUN_LIMIT.saturating_sub(started.elapsed());
                let _ = tokio::time::timeout(left, ended.wait_for(|v| v.len() >= at.len())).await;
            }
            if let Some(k) = at.iter().position(|&a| a == i) {
                // One fault at a time: the next starts once the broker is back.
                let _ = tokio::time::timeout(RUN_LIMIT, ended.wait_for(|v| v.len() >= k)).await;
                let _ = start.send(k);
            }
            let id = format!("{}-{i}", names.prefix());
            let message = Message::new(format!("fault-{i}")).with_id(id.clone());
            sent += 1;
            let outcome =
                tokio::time::timeout(Duration::from_secs(60), publisher.publish(&topic, message))
                    .await;
            match outcome {
                Ok(Ok(())) => {
                    confirmed.insert(id);
                    let ends = ended.borrow().clone();
                    for (k, end) in ends.iter().enumerate() {
                        if recoveries[k].is_none() {
                            recoveries[k] = Some(end.elapsed());
                        }
                    }
                }
                Ok(Err(e)) => {
                    note(&mut errors, e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => note(&mut errors, "publish took over 60 s".into()),
            }
            if started.elapsed() > RUN_LIMIT {
                note(&mut errors, "run limit reached: stopped publishing".into());
                break;
            }
            i += 1;
        }
        drop(start);
        (sent, confirmed, errors, recoveries)
    };
    let ((), (sent, confirmed, errors, recoveries)) = tokio::join!(faults, publishing);
    let seen = settle_on(&confirmed, &seen, SETTLE_AFTER_OUTAGE).await;
    consumer.abort();
    let mut report = report_of(backend, fault_name, sent, &confirmed, &seen, errors);
    // `None` unless a publish was confirmed after every fault: a broker that never came back
    // must not hide behind the other fault's figure.
    report.recovery_ms = recoveries
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()
        .and_then(|all| all.into_iter().max())
        .map(|d| d.as_millis());
    report
}

/// Waits up to `settle` until every confirmed id was seen; returns what was seen.
async fn settle_on(
    confirmed: &HashSet<String>,
    seen: &Mutex<HashMap<String, usize>>,
    settle: Duration,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + settle;
    loop {
        let now = seen.lock().map(|s| s.clone()).unwrap_or_default();
        if confirmed.iter().all(|id| now.contains_key(id)) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The report's counts from what was confirmed and what was seen (recovery and health unset).
pub fn report_of(
    backend: &str,
    fault_name: &str,
    sent: usize,
    confirmed: &HashSet<String>,
    seen: &HashMap<String, usize>,
    errors: Vec<String>,
) -> FaultReport {
    FaultReport {
        backend: backend.to_string(),
        fault: fault_name.to_string(),
        sent,
        confirmed: confirmed.len(),
        handled: seen.len(),
        lost: confirmed
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .count(),
        duplicated: seen.values().map(|n| n.saturating_sub(1)).sum(),
        recovery_ms: None,
        errors,
        health_saw_outage: None,
        health_recovered: None,
    }
}

/// Keeps the first five kinds of publish error; how many failed is `sent - confirmed`.
pub fn note(errors: &mut Vec<String>, e: String) {
    if errors.len() < 5 && !errors.contains(&e) {
        errors.push(e);
    }
}

/// Acks everything, counting each id; re-subscribes when the stream ends or fails (the
/// adapters reconnect inside their streams, this covers the ones that end them instead).
async fn consume(
    subscriber: Arc<dyn Subscriber>,
    subscription: Subscription,
    seen: Arc<Mutex<HashMap<String, usize>>>,
) {
    loop {
        let Ok(mut stream) = subscriber.subscribe(&subscription).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Some(item) = stream.next().await {
            let Ok(delivery) = item else { continue };
            // Counted on receipt: an ack that fails in the fault is redelivered, and shows up
            // as a duplicate, not as a loss.
            if let Ok(mut seen) = seen.lock() {
                *seen.entry(delivery.message().id.clone()).or_default() += 1;
            }
            let _ = delivery.ack().await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
