//! Time in messages: a scheduled message is not handled before its time and is handled once,
//! even when the connection that scheduled it is gone; cancelled ones never arrive; expired
//! ones never reach a handler; a retry handed to the broker survives the consumer's restart.
//!
//! Delays are short (at most 2 s) and every wait is for an event; the one timing assertion
//! is "not before the time asked for", which the runtime guarantees with the same clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use longshore_core::{
    Consumer, EventPublisher, ExpiredPolicy, HandlerError, RetryPolicy, HEADER_DLQ_REASON,
};
use tokio::sync::mpsc;

use crate::events::{order, OrderCreated, SHUTDOWN};
use crate::helpers::{eventually, recv, within, QUIET};
use crate::Fixture;

/// How far ahead the scenarios schedule.
const AHEAD: Duration = Duration::from_millis(1_500);

/// A handler that reports each order with the time it ran and the attempt.
fn reporting(
    tx: mpsc::UnboundedSender<(String, DateTime<Utc>, u32)>,
) -> impl Fn(
    OrderCreated,
    longshore_core::HandlerContext,
) -> std::future::Ready<Result<(), HandlerError>>
       + Send
       + Sync
       + 'static {
    move |e, ctx| {
        let _ = tx.send((e.order_id, Utc::now(), ctx.attempt));
        std::future::ready(Ok(()))
    }
}

/// Awaits the next report, failing the test on timeout.
async fn next(
    rx: &mut mpsc::UnboundedReceiver<(String, DateTime<Utc>, u32)>,
) -> (String, DateTime<Utc>, u32) {
    within("a handled order", rx.recv())
        .await
        .expect("handler channel open")
}

/// Fails if another report arrives within [`QUIET`].
async fn nothing_more(rx: &mut mpsc::UnboundedReceiver<(String, DateTime<Utc>, u32)>, what: &str) {
    if let Ok(Some(extra)) = tokio::time::timeout(QUIET, rx.recv()).await {
        panic!("{what}: {extra:?}");
    }
}

/// A message scheduled 1.5 s ahead is handled once, not before its time, and a message
/// published after it, unscheduled, is handled first.
pub async fn scheduled_message_is_not_delivered_early_and_once(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("scheduled").await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .on(reporting(tx))
        .start()
        .await
        .expect("start");
    let events = s.events();
    let when = Utc::now() + chrono::Duration::from_std(AHEAD).expect("delay");
    events
        .publish_at(&topic, &order("later"), when)
        .await
        .expect("publish_at");
    events
        .publish_to(&topic, &order("now"))
        .await
        .expect("publish");
    assert_eq!(next(&mut rx).await.0, "now", "the unscheduled order first");
    let (id, at, _) = next(&mut rx).await;
    assert_eq!(id, "later");
    assert!(at >= when, "handled at {at}, before its time {when}");
    nothing_more(&mut rx, "a scheduled message handled twice").await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!(stats.acked, 2);
    assert_eq!(stats.dead_lettered, 0);
}

/// The connection that scheduled a message is closed right after `publish_at` returned
/// (as a process that exits would): the message still arrives, once, on time.
pub async fn scheduled_message_survives_its_publisher(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("scheduled-gone").await;
    let other = f.reconnect().await;
    let when = Utc::now() + chrono::Duration::from_std(AHEAD).expect("delay");
    EventPublisher::new(other.publisher())
        .publish_at(&topic, &order("orphan"), when)
        .await
        .expect("publish_at");
    other
        .close()
        .await
        .expect("close the publishing connection");
    drop(other);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .on(reporting(tx))
        .start()
        .await
        .expect("start");
    let (id, at, _) = next(&mut rx).await;
    assert_eq!(id, "orphan");
    assert!(at >= when, "handled at {at}, before its time {when}");
    nothing_more(&mut rx, "a scheduled message handled twice").await;
    consumer.shutdown(SHUTDOWN).await;
}

/// A cancelled schedule is never delivered; cancelling twice, or after delivery, says so.
pub async fn cancelled_schedule_is_never_delivered(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("cancelled").await;
    let events = s.events();
    let when = Utc::now() + chrono::Duration::from_std(AHEAD).expect("delay");
    let cancelled = events
        .publish_at(&topic, &order("cancelled"), when)
        .await
        .expect("publish_at");
    let kept = events
        .publish_at(&topic, &order("kept"), when)
        .await
        .expect("publish_at");
    assert!(events.cancel(&cancelled).await.expect("cancel"));
    assert!(!events.cancel(&cancelled).await.expect("cancel again"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .on(reporting(tx))
        .start()
        .await
        .expect("start");
    assert_eq!(next(&mut rx).await.0, "kept");
    nothing_more(&mut rx, "a cancelled schedule was delivered").await;
    assert!(!events.cancel(&kept).await.expect("cancel a delivered one"));
    consumer.shutdown(SHUTDOWN).await;
}

/// An expired message never reaches the handler: dead-lettered with reason `expired` when so
/// configured, and counted; one that has not expired yet is handled.
pub async fn expired_message_never_reaches_the_handler(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("expired").await;
    let mut dlq = s.dead_letters(&sub.name).await;
    let codec = longshore_core::JsonCodec;
    let stale = longshore_core::Codec::encode(&codec, &order("stale"))
        .expect("encode")
        .expires_at(Utc::now() - chrono::Duration::seconds(1));
    let fresh = longshore_core::Codec::encode(&codec, &order("fresh"))
        .expect("encode")
        .expires_after(Duration::from_secs(3600));
    let stale_id = stale.id.clone();
    s.publish(&topic, stale).await;
    s.publish(&topic, fresh).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(s.subscriber.clone(), sub)
        .on(reporting(tx))
        .on_expired(ExpiredPolicy::DeadLetter)
        .start()
        .await
        .expect("start");
    assert_eq!(next(&mut rx).await.0, "fresh");
    let dead = recv(&mut dlq).await;
    assert_eq!(dead.message().id, stale_id);
    assert_eq!(dead.message().headers[HEADER_DLQ_REASON], "expired");
    dead.ack().await.expect("ack");
    nothing_more(&mut rx, "an expired message was handled").await;
    let stats = consumer.shutdown(SHUTDOWN).await;
    assert_eq!((stats.expired, stats.dead_lettered, stats.acked), (1, 1, 1));
}

/// A retry the runtime handed to the broker (a backoff over `durable_after`) survives the
/// consumer: shut down during the backoff, a new consumer on a new connection handles the
/// message after the backoff, with the attempt count carried on.
pub async fn delayed_retry_survives_a_consumer_restart(f: &Fixture) {
    let s = f.scene();
    let (topic, sub) = s.ensured("durable-retry").await;
    let backoff = Duration::from_millis(1_500);
    let policy = RetryPolicy::exponential(5, backoff)
        .with_jitter(0.0)
        .with_durable_after(Duration::ZERO);
    let failing = Consumer::new(s.subscriber.clone(), sub.clone())
        .retry(policy.clone())
        .on(|_: OrderCreated, _| async { Err(HandlerError::transient("downstream down")) })
        .start()
        .await
        .expect("start");
    s.events()
        .publish_to(&topic, &order("retried"))
        .await
        .expect("publish");
    eventually("the first attempt failed and was handed over", || {
        failing.stats().retried == 1
    })
    .await;
    let failed_at = Utc::now();
    let stats = failing.shutdown(SHUTDOWN).await;
    assert_eq!(stats.requeued, 0, "the retry was slept in process");
    let other = f.reconnect().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumer = Consumer::new(other.subscriber(), sub)
        .retry(policy)
        .on(reporting(tx))
        .start()
        .await
        .expect("start");
    let (id, at, attempt) = next(&mut rx).await;
    assert_eq!(id, "retried");
    // At least 2: the count goes on, it never restarts. JetStream may count one more: a
    // delivery offered to the departed consumer's pull request, still open on the server.
    assert!(attempt >= 2, "the retry came back as attempt {attempt}");
    // The backoff was counted from the failure, which happened before `failed_at` was read.
    let earliest = failed_at - chrono::Duration::milliseconds(200)
        + chrono::Duration::from_std(backoff).expect("backoff");
    assert!(at >= earliest, "retried at {at}, before the backoff ended");
    nothing_more(&mut rx, "the retried message was handled twice").await;
    consumer.shutdown(SHUTDOWN).await;
    other.close().await.expect("close");
}
