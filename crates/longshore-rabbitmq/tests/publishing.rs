//! What the conformance suite cannot see: unroutable messages and broker nacks are typed
//! errors, the AMQP properties on the wire, and the seed's queue arguments.

mod common;

use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use longshore_core::{Broker, Error, Message, Subscription};
use longshore_rabbitmq::{queue_arguments, RabbitBroker, KEY_HEADER};
use longshore_testkit::Names;

async fn raw_channel() -> (Connection, Channel) {
    let conn = Connection::connect(&common::amqp_url(), ConnectionProperties::default())
        .await
        .expect("raw connection");
    let channel = conn.create_channel().await.expect("channel");
    (conn, channel)
}

async fn broker() -> Option<RabbitBroker> {
    common::broker_with(|c| c).await
}

#[tokio::test]
async fn unroutable_publish_is_a_typed_error_by_default() {
    let Some(broker) = broker().await else { return };
    let n = Names::new();
    let publisher = broker.publisher();
    let e = publisher
        .publish(&n.topic("nobody.listens"), Message::new("x"))
        .await
        .expect_err("no queue is bound");
    match &e {
        Error::Rejected {
            retryable, message, ..
        } => {
            assert!(!retryable);
            assert!(message.contains("NO_ROUTE"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let batch: Vec<Message> = (0..5).map(|i| Message::new(format!("{i}"))).collect();
    let err = publisher
        .publish_batch(&n.topic("nobody.listens"), batch.clone())
        .await
        .expect_err("batch to nowhere");
    assert_eq!(err.total, 5);
    assert_eq!(
        err.failed.iter().map(|f| f.index).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        err.failed[2].message, batch[2],
        "messages come back untouched"
    );
    // Once a subscription matches, the same publish goes through.
    let sub = Subscription::new(n.sub("late"), [n.topic("nobody.#")]);
    broker
        .subscriber()
        .ensure_subscription(&sub)
        .await
        .expect("ensure");
    publisher
        .publish(&n.topic("nobody.listens"), Message::new("x"))
        .await
        .expect("routable now");
}

#[tokio::test]
async fn broker_nack_is_an_error_and_only_nacked_messages_fail() {
    let Some(broker) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("full");
    let queue = n.sub("full");
    let (_conn, raw) = raw_channel().await;
    // A queue that refuses publishes beyond two messages: the broker nacks them.
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(2));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    raw.exchange_declare(
        broker.config().exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange");
    raw.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .expect("queue");
    raw.queue_bind(
        queue.as_str().into(),
        broker.config().exchange.as_str().into(),
        topic.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let publisher = broker.publisher();
    let batch: Vec<Message> = (0..5).map(|i| Message::new(format!("{i}"))).collect();
    let err = publisher
        .publish_batch(&topic, batch)
        .await
        .expect_err("three are nacked");
    assert_eq!(
        err.failed.iter().map(|f| f.index).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    for f in &err.failed {
        assert!(
            matches!(
                f.error,
                Error::Rejected {
                    retryable: true,
                    ..
                }
            ),
            "{:?}",
            f.error
        );
    }
    let e = publisher
        .publish(&topic, Message::new("one more"))
        .await
        .expect_err("full");
    assert!(matches!(e, Error::Rejected { .. }), "{e:?}");
    raw.queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
}

#[tokio::test]
async fn wire_properties_are_persistent_with_id_type_headers_and_key() {
    let Some(broker) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("wire");
    let name = n.sub("wire");
    broker
        .subscriber()
        .ensure_subscription(&Subscription::new(name.clone(), [topic.clone()]))
        .await
        .expect("ensure");
    let m = Message::new(&b"{\"a\":1}"[..])
        .with_key("agg-7")
        .with_header("content-type", "application/json")
        .with_header("tenant", "acme");
    broker
        .publisher()
        .publish(&topic, m.clone())
        .await
        .expect("publish");
    let (_conn, raw) = raw_channel().await;
    let got = raw
        .basic_get(name.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("a message");
    let p = &got.delivery.properties;
    assert_eq!(p.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        p.message_id().as_ref().map(|s| s.as_str()),
        Some(m.id.as_str())
    );
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    let headers = p.headers().as_ref().expect("headers").inner();
    assert_eq!(
        headers.get("tenant"),
        Some(&AMQPValue::LongString("acme".into()))
    );
    assert_eq!(
        headers.get(KEY_HEADER),
        Some(&AMQPValue::LongString("agg-7".into()))
    );
    assert_eq!(got.delivery.routing_key.as_str(), topic);
    assert_eq!(got.delivery.data, b"{\"a\":1}");
}

#[tokio::test]
async fn queue_is_declared_with_exactly_the_seed_arguments() {
    let Some(broker) = broker().await else { return };
    let n = Names::new();
    let name = n.sub("seedargs");
    let sub = Subscription::new(name.clone(), [n.topic("x")]);
    broker
        .subscriber()
        .ensure_subscription(&sub)
        .await
        .expect("ensure");
    let (_conn, raw) = raw_channel().await;
    // What the seed's consumer declares: durable, the two DLX arguments as strings.
    let mut seed = FieldTable::default();
    seed.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("dlx".into()),
    );
    seed.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(format!("dlq.{name}").into()),
    );
    assert_eq!(seed, queue_arguments(&name));
    raw.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        seed,
    )
    .await
    .expect("the seed's declaration matches ours");
    // The broker does check arguments: a different one is refused.
    let other = raw_channel().await.1;
    let e = other
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect_err("inequivalent arguments");
    assert!(e.to_string().contains("PRECONDITION_FAILED"), "{e}");
    // The dead-letter queue exists and is a plain durable queue.
    raw.queue_declare(
        format!("dlq.{name}").as_str().into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("dlq exists");
}

#[tokio::test]
async fn rejected_by_a_seed_service_lands_in_the_dlq_too() {
    // The seed's consumer rejects failed messages (requeue=false): the queue's DLX arguments
    // route them to dlq.<queue>, where `dead_letters_of` reads them (with x-death, without
    // longshore's reason headers).
    let Some(broker) = broker().await else { return };
    let n = Names::new();
    let topic = n.topic("seedreject");
    let name = n.sub("seedreject");
    let subscriber = broker.subscriber();
    subscriber
        .ensure_subscription(&Subscription::new(name.clone(), [topic.clone()]))
        .await
        .expect("ensure");
    let mut dlq = subscriber
        .subscribe(&Subscription::dead_letters_of(&name))
        .await
        .expect("dlq");
    let m = Message::new("bad");
    broker
        .publisher()
        .publish(&topic, m.clone())
        .await
        .expect("publish");
    let (_conn, raw) = raw_channel().await;
    let got = raw
        .basic_get(name.as_str().into(), BasicGetOptions { no_ack: false })
        .await
        .expect("get")
        .expect("a message");
    got.delivery
        .acker
        .reject(lapin::options::BasicRejectOptions { requeue: false })
        .await
        .expect("reject");
    let dead = longshore_testkit::recv(&mut dlq).await;
    assert_eq!(dead.message().id, m.id);
    dead.ack().await.expect("ack");
}

#[tokio::test]
async fn closed_broker_refuses_everything() {
    let Some(broker) = broker().await else { return };
    assert!(broker.is_connected());
    let health = broker.health().await;
    assert!(health.is_ready(), "connected: {health:?}");
    let publisher = broker.publisher();
    let subscriber = broker.subscriber();
    broker.close().await.expect("close");
    assert!(!broker.is_connected());
    let n = Names::new();
    assert!(matches!(
        publisher.publish(&n.topic("x"), Message::new("x")).await,
        Err(Error::Closed(_))
    ));
    assert!(matches!(
        subscriber
            .subscribe(&Subscription::new(n.sub("x"), [n.topic("x")]))
            .await
            .err(),
        Some(Error::Closed(_))
    ));
    let health = broker.health().await;
    assert!(
        !health.is_ready() && !health.connected,
        "closed: {health:?}"
    );
}

#[tokio::test]
async fn queue_declared_otherwise_is_a_config_error() {
    let Some(broker) = broker().await else { return };
    let n = Names::new();
    let name = n.sub("other-args");
    let (_conn, raw) = raw_channel().await;
    raw.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("a queue without DLX arguments");
    let r = broker
        .subscriber()
        .subscribe(&Subscription::new(name.clone(), [n.topic("x")]))
        .await;
    match r {
        Err(Error::Config(message)) => {
            assert!(message.contains("PRECONDITION_FAILED"), "{message}")
        }
        other => panic!("expected Config, got {:?}", other.err()),
    }
    raw.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete");
}
