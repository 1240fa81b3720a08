//! Lifecycle: subscriptions keep messages across consumers that come and go, and a publisher
//! flushes on close and refuses afterwards.

use std::collections::BTreeSet;

use futures::StreamExt;
use longshore_core::{Error, Message};

use crate::helpers::{drain_ids, ids_of, message, recv, recv_n};
use crate::Fixture;

/// A consumer closed and reopened ten times, acking a few each time, loses nothing.
pub async fn reopen_repeatedly_without_loss(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.on("reopen");
    let sub = sub.with_prefetch(2);
    s.ensure(&sub).await;
    let batch: Vec<Message> = (0..30).map(message).collect();
    let expected = ids_of(&batch);
    s.publish_batch(&topic, batch).await;
    let mut got = BTreeSet::new();
    for _ in 0..10 {
        let mut stream = s.subscribe(&sub).await;
        // Ack two, leave one unsettled and drop it with the stream: it must come back.
        for d in recv_n(&mut stream, 2).await {
            got.insert(d.message().id.clone());
            d.ack().await.expect("ack");
        }
        let unsettled = recv(&mut stream).await;
        drop(unsettled);
        drop(stream);
    }
    let mut stream = s.subscribe(&sub).await;
    while got.len() < expected.len() {
        let d = recv(&mut stream).await;
        got.insert(d.message().id.clone());
        d.ack().await.expect("ack");
    }
    assert_eq!(got, expected);
}

/// Many consumers subscribing and being dropped concurrently neither fail nor lose messages.
pub async fn concurrent_subscribe_and_close(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("churn").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let subscriber = s.subscriber.clone();
        let sub = sub.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..3 {
                let stream = subscriber.subscribe(&sub).await.expect("subscribe");
                drop(stream);
            }
        }));
    }
    for t in tasks {
        t.await.expect("churn task");
    }
    let m = message(1);
    f.publisher()
        .publish(&topic, m.clone())
        .await
        .expect("publish");
    let mut stream = s.subscribe(&sub).await;
    assert_eq!(drain_ids(&mut stream, 1).await, vec![m.id]);
}

/// Messages published after `ensure_subscription` and before any consumer are kept.
pub async fn subscription_keeps_messages_before_consumer_starts(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("early").await;
    let batch: Vec<Message> = (0..5).map(message).collect();
    let expected = ids_of(&batch);
    f.publisher()
        .publish_batch(&topic, batch)
        .await
        .expect("batch");
    let mut stream = f.subscriber().subscribe(&sub).await.expect("subscribe");
    let got: BTreeSet<String> = drain_ids(&mut stream, 5).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// Everything published before `close` returns is delivered.
pub async fn publisher_close_flushes_everything(f: &Fixture) {
    let s = f.scene();
    let (topic, mut stream) = s.open("flush").await;
    let publisher = f.publisher();
    let batch: Vec<Message> = (0..50).map(message).collect();
    let expected = ids_of(&batch);
    publisher.publish_batch(&topic, batch).await.expect("batch");
    publisher.close().await.expect("close");
    drop(publisher);
    let got: BTreeSet<String> = drain_ids(&mut stream, 50).await.into_iter().collect();
    assert_eq!(got, expected);
}

/// After `close`, publishing is [`Error::Closed`].
pub async fn closed_publisher_refuses(f: &Fixture) {
    let s = f.scene();
    s.publisher.close().await.expect("close");
    let r = s.publisher.publish(&s.topic("closed"), message(1)).await;
    assert!(matches!(r, Err(Error::Closed(_))), "{r:?}");
}

/// A stream whose subscriber handle was dropped (without `close`) keeps delivering, and while
/// nothing arrives it waits without burning a core. (NATS's puller once waited on a close
/// signal whose sender went with the handle: the wait returned at once, forever.)
pub async fn stream_outlives_its_subscriber_handle(f: &Fixture) {
    let subscriber = f.subscriber();
    let s = f.scene();
    let (topic, sub) = s.on("orphan");
    let mut stream = subscriber.subscribe(&sub).await.expect("subscribe");
    drop(subscriber);
    s.publish(&topic, message(1)).await;
    let d = recv(&mut stream).await;
    d.ack().await.expect("ack");
    let Some(before) = cpu_time() else {
        eprintln!("skipped the idle check: this system has no /proc/self/stat");
        return;
    };
    // A measurement window, not a wait for an event: nothing is published during it, and
    // the stream is waited on all the while.
    let idle = tokio::time::timeout(IDLE_WINDOW, stream.next()).await;
    assert!(
        idle.is_err(),
        "nothing was published, yet the stream gave {idle:?}"
    );
    let used = cpu_time().unwrap_or(before).saturating_sub(before);
    // Idle, the process uses a few milliseconds; a busy loop uses most of the window even on
    // a loaded machine.
    assert!(
        used < IDLE_WINDOW / 4,
        "an idle stream used {used:?} of CPU in {IDLE_WINDOW:?}"
    );
    drop(stream);
}

/// How long [`stream_outlives_its_subscriber_handle`] watches an idle stream.
const IDLE_WINDOW: std::time::Duration = std::time::Duration::from_millis(800);

/// The CPU time (user + system) this process has used, from `/proc/self/stat` (Linux).
fn cpu_time() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after its closing paren;
    // utime and stime are the 14th and 15th fields overall, in clock ticks (100 per second
    // on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(std::time::Duration::from_millis(ticks * 10))
}
