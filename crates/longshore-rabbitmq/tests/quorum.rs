//! Quorum queues beyond the conformance suite: what is declared, a queue of the other type is
//! a typed error at once, attempts are exact, and a dead letter starts its own count.

mod common;

use std::time::Duration;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties};
use longshore_core::{Broker, Error, Message, Subscription};
use longshore_rabbitmq::{
    dead_letter_queue_arguments, queue_arguments, subscription_queue_arguments, QueueType,
    RabbitBroker,
};
use longshore_testkit::{recv, Names};

async fn raw_channel() -> (Connection, Channel) {
    let conn = Connection::connect(&common::amqp_url(), ConnectionProperties::default())
        .await
        .expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    (conn, channel)
}

async fn broker(queue_type: QueueType) -> Option<RabbitBroker> {
    common::broker_with(|c| c.with_queue_type(queue_type)).await
}

/// Declares `queue` durable with `arguments` on a fresh channel (a refusal closes it).
async fn declare(queue: &str, arguments: FieldTable) -> Result<(), lapin::Error> {
    let (_conn, channel) = raw_channel().await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), durable, arguments)
        .await
        .map(drop)
}

async fn delete(queue: &str) {
    let (_conn, channel) = raw_channel().await;
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
}

fn with_type(mut arguments: FieldTable, queue_type: &str) -> FieldTable {
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(queue_type)),
    );
    arguments
}

#[tokio::test]
async fn subscription_and_dead_letter_queues_are_quorum_queues() {
    let Some(broker) = broker(QueueType::Quorum).await else {
        return;
    };
    assert!(broker.capabilities().delivery_count);
    let n = Names::new();
    let name = n.sub("declared");
    let dlq = format!("dlq.{name}");
    broker
        .subscriber()
        .ensure_subscription(&Subscription::new(name.clone(), [n.topic("x")]))
        .await
        .expect("ensure");
    // Re-declaring with the same arguments is accepted; as a classic queue it is refused.
    declare(
        &name,
        subscription_queue_arguments(&name, QueueType::Quorum),
    )
    .await
    .expect("the queue is the quorum queue declared");
    declare(&dlq, dead_letter_queue_arguments(QueueType::Quorum))
        .await
        .expect("the dlq is a quorum queue");
    assert!(declare(&name, with_type(queue_arguments(&name), "classic"))
        .await
        .is_err());
    assert!(declare(&dlq, with_type(FieldTable::default(), "classic"))
        .await
        .is_err());
    delete(&name).await;
    delete(&dlq).await;
}

#[tokio::test]
async fn a_classic_queue_of_the_name_is_a_config_error_naming_it() {
    let Some(broker) = broker(QueueType::Quorum).await else {
        return;
    };
    let n = Names::new();
    let name = n.sub("was-classic");
    declare(&name, queue_arguments(&name))
        .await
        .expect("a classic queue with the seed's arguments");
    let subscription = Subscription::new(name.clone(), [n.topic("x")]);
    let subscriber = broker.subscriber();
    let subscribed =
        tokio::time::timeout(Duration::from_secs(10), subscriber.subscribe(&subscription))
            .await
            .expect("refused at once, not retried");
    let ensured = subscriber.ensure_subscription(&subscription).await;
    for result in [subscribed.map(drop), ensured] {
        match result {
            Err(Error::Config(message)) => {
                assert!(message.contains(&format!("{name:?}")), "{message}");
                assert!(message.contains("x-queue-type=quorum"), "{message}");
                assert!(message.contains("PRECONDITION_FAILED"), "{message}");
            }
            other => panic!("expected Error::Config, got {other:?}"),
        }
    }
    delete(&name).await;
    delete(&format!("dlq.{name}")).await;
}

#[tokio::test]
async fn attempts_are_exact_and_a_dead_letter_starts_at_one() {
    let Some(broker) = broker(QueueType::Quorum).await else {
        return;
    };
    let n = Names::new();
    let name = n.sub("attempts");
    let topic = n.topic("attempts");
    let subscriber = broker.subscriber();
    let mut stream = subscriber
        .subscribe(&Subscription::new(name.clone(), [topic.clone()]))
        .await
        .expect("subscribe");
    broker
        .publisher()
        .publish(&topic, Message::new("x"))
        .await
        .expect("publish");
    for attempt in 1..=3 {
        let d = recv(&mut stream).await;
        assert_eq!(d.attempt, attempt);
        d.nack(None).await.expect("nack");
    }
    let d = recv(&mut stream).await;
    assert_eq!(d.attempt, 4);
    assert_eq!(
        d.message()
            .headers
            .get("x-delivery-count")
            .map(String::as_str),
        Some("3")
    );
    d.dead_letter("poison").await.expect("dead letter");
    let mut dead = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("subscribe to the dlq");
    let letter = recv(&mut dead).await;
    // The dead letter's count is its own queue's, not the original's 3.
    assert_eq!(letter.attempt, 1);
    assert!(!letter.message().headers.contains_key("x-delivery-count"));
    letter.ack().await.expect("ack");
    drop((stream, dead));
    delete(&name).await;
    delete(&format!("dlq.{name}")).await;
}

#[tokio::test]
async fn a_quorum_queue_of_the_name_is_a_config_error_for_a_classic_subscriber() {
    let Some(broker) = broker(QueueType::Classic).await else {
        return;
    };
    let n = Names::new();
    let name = n.sub("was-quorum");
    declare(
        &name,
        subscription_queue_arguments(&name, QueueType::Quorum),
    )
    .await
    .expect("a quorum queue");
    let r = broker
        .subscriber()
        .ensure_subscription(&Subscription::new(name.clone(), [n.topic("x")]))
        .await;
    match r {
        Err(Error::Config(message)) => {
            assert!(message.contains(&format!("{name:?}")), "{message}");
            assert!(message.contains("no x-queue-type"), "{message}");
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
    delete(&name).await;
    delete(&format!("dlq.{name}")).await;
}
