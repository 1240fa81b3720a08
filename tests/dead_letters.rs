//! `Longshore::dead_letters` on every compiled-in backend: letters dead-lettered through the
//! adapter's own path are listed with reason, topic and attempts, shown by id, replayed
//! (arriving again without the dead-letter headers) and purged; what a filter does not choose
//! stays.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use longshore::prelude::*;
use longshore::{DeadLetterFilter, DeliveryStream, DEAD_LETTER_HEADERS};

const WAIT: Duration = Duration::from_secs(60);

async fn next(stream: &mut DeliveryStream) -> longshore::Delivery {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a delivery in time")
        .expect("stream open")
        .expect("delivery")
}

fn ids(letters: &[longshore::DeadLetterRecord]) -> BTreeSet<String> {
    letters.iter().map(|l| l.id.clone()).collect()
}

async fn dead_letter_operations(url: &str) {
    let backend = url.split("://").next().unwrap_or(url).to_string();
    let Some(ls) = longshore_testkit::require_broker(&backend, url, longshore::connect(url).await)
    else {
        return;
    };
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let name = format!("dl-{run}");
    let topic = format!("dl{run}.payments.requested");
    let sub = Subscription::new(name.clone(), [format!("dl{run}.payments.*")]);
    let mut stream = ls.subscriber.subscribe(&sub).await.expect("subscribe");
    let publisher = EventPublisher::new(ls.publisher.clone());
    let mut sent = Vec::new();
    for (i, kind) in ["payment_requested", "payment_requested", "refund_requested"]
        .iter()
        .enumerate()
    {
        let event = Event::new(*kind, serde_json::json!({ "n": i }));
        publisher.publish_to(&topic, &event).await.expect("publish");
        sent.push(event.id.to_string());
    }
    // Dead-letter each through the adapter's own path, with distinct reasons.
    for _ in 0..3 {
        let d = next(&mut stream).await;
        let reason = if d.message().id == sent[0] {
            "provider timeout"
        } else {
            "card declined"
        };
        d.dead_letter_after(reason, 3).await.expect("dead letter");
    }
    let dlq = ls.dead_letters(&name);

    let all = dlq.list(&DeadLetterFilter::all()).await.expect("list");
    assert_eq!(ids(&all), sent.iter().cloned().collect(), "{backend}");
    for letter in &all {
        assert_eq!(letter.original_topic.as_deref(), Some(topic.as_str()));
        assert_eq!(letter.subscription.as_deref(), Some(name.as_str()));
        assert_eq!(letter.attempts, Some(3));
        assert!(letter.dead_lettered_at.is_some());
    }
    // Listing leaves every letter in place.
    let timeouts = dlq
        .list(&DeadLetterFilter::all().reason("TIMEOUT"))
        .await
        .expect("list by reason");
    assert_eq!(
        ids(&timeouts),
        BTreeSet::from([sent[0].clone()]),
        "{backend}"
    );
    let refunds = dlq
        .list(&DeadLetterFilter::all().event_type("refund_requested"))
        .await
        .expect("list by type");
    assert_eq!(
        ids(&refunds),
        BTreeSet::from([sent[2].clone()]),
        "{backend}"
    );
    let shown = dlq.show(&sent[1]).await.expect("show").expect("found");
    assert_eq!(shown.reason.as_deref(), Some("card declined"));
    assert!(dlq.show("no-such-id").await.expect("show").is_none());

    // Replay the timeout: it arrives again on its topic, without the dead-letter headers.
    let report = dlq
        .replay(&DeadLetterFilter::all().reason("timeout"), None)
        .await
        .expect("replay");
    assert_eq!(report.replayed, vec![sent[0].clone()], "{backend}");
    assert_eq!(report.not_chosen, 2);
    let again = next(&mut stream).await;
    assert_eq!(again.message().id, sent[0]);
    assert_eq!(again.topic, topic);
    for h in DEAD_LETTER_HEADERS {
        assert!(
            !again.message().headers.contains_key(h),
            "{backend}: {h} kept"
        );
    }
    again.ack().await.expect("handled");

    let left = dlq.list(&DeadLetterFilter::all()).await.expect("list");
    assert_eq!(ids(&left), sent[1..].iter().cloned().collect(), "{backend}");
    let purged = dlq
        .purge(&DeadLetterFilter::all().id(sent[2].clone()))
        .await
        .expect("purge");
    assert_eq!(purged, vec![sent[2].clone()]);
    let left = dlq.list(&DeadLetterFilter::all()).await.expect("list");
    assert_eq!(ids(&left), BTreeSet::from([sent[1].clone()]), "{backend}");
    let purged = dlq.purge(&DeadLetterFilter::all()).await.expect("purge");
    assert_eq!(purged, vec![sent[1].clone()]);
    assert!(dlq
        .list(&DeadLetterFilter::all())
        .await
        .expect("list")
        .is_empty());

    // An unknown subscription is an error where the backend can tell.
    if backend != "kafka" {
        let err = ls
            .dead_letters(&format!("nobody-{run}"))
            .list(&DeadLetterFilter::all())
            .await
            .expect_err("unknown subscription");
        assert!(matches!(err, longshore::Error::InvalidName { .. }), "{err}");
    }
    drop(stream);
    ls.publisher.close().await.expect("close publisher");
    ls.subscriber.close().await.expect("close subscriber");
}

#[tokio::test]
async fn dead_letters_memory() {
    dead_letter_operations("memory://").await;
}

#[cfg(feature = "rabbitmq")]
#[tokio::test]
async fn dead_letters_rabbitmq() {
    dead_letter_operations(&common::amqp_url()).await;
}

#[cfg(feature = "nats")]
#[tokio::test]
async fn dead_letters_nats() {
    dead_letter_operations(&common::nats_url()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn dead_letters_postgres() {
    dead_letter_operations(&common::postgres_url()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn dead_letters_sqlite() {
    dead_letter_operations(&common::sqlite_url()).await;
}

#[cfg(feature = "kafka")]
#[tokio::test]
async fn dead_letters_kafka() {
    dead_letter_operations(&common::kafka_url()).await;
}
