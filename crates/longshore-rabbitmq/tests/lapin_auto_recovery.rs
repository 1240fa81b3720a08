//! A probe of lapin 4's own `enable_auto_recover()` (which this adapter does not use), kept to
//! re-check the README's findings when lapin changes:
//!
//! `cargo test -p longshore-rabbitmq --test lapin_auto_recovery -- --ignored --nocapture`
//!
//! It closes every connection of the broker with `rabbitmqctl`, so it is ignored by default
//! (other test binaries may hold connections when run by hand in parallel). It prints what it
//! observes and asserts only that the probe itself ran to the end in bounded time.

mod common;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

async fn close_all() {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args([
            "close_all_connections",
            "--global",
            "lapin auto-recovery probe",
        ])
        .output()
        .await
        .expect("rabbitmqctl");
    assert!(out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "closes every broker connection; run by hand"]
async fn probe_lapin_auto_recovery() {
    let probe = async {
        let conn = Connection::connect(
            &common::amqp_url(),
            ConnectionProperties::default().enable_auto_recover(),
        )
        .await
        .expect("connect");
        let queue = format!("lapin-probe-{}", uuid::Uuid::new_v4().simple());
        let publisher = conn.create_channel().await.expect("channel");
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        publisher
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        let consumer_channel = conn.create_channel().await.expect("channel");
        let mut consumer = consumer_channel
            .basic_consume(
                queue.as_str().into(),
                "probe".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let publish = |body: &'static [u8]| {
            let publisher = publisher.clone();
            let queue = queue.clone();
            async move {
                publisher
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?
                    .await
            }
        };
        publish(b"before").await.expect("publish before");
        let held = consumer.next().await.expect("item").expect("delivery");
        println!(
            "received {:?} before the cut",
            String::from_utf8_lossy(&held.data)
        );

        close_all().await;

        // 1. A publish right after the cut.
        let first = publish(b"after").await;
        println!("publish right after the cut: {first:?}");
        if let Err(e) = first {
            let recovered =
                tokio::time::timeout(Duration::from_secs(30), publisher.wait_for_recovery(e)).await;
            println!("publisher wait_for_recovery: {recovered:?}");
            let again = publish(b"after").await;
            println!("publish after recovery: {again:?}");
        }
        // 2. The delivery received before the cut.
        let old_ack = held.acker.ack(BasicAckOptions::default()).await;
        println!(
            "ack of a delivery from before the cut: {old_ack:?} (usable: {})",
            held.acker.usable()
        );
        // 3. Does the same consumer stream go on?
        for _ in 0..3 {
            match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
                Err(_) => {
                    println!("consumer stream: nothing within 10 s");
                    break;
                }
                Ok(None) => {
                    println!("consumer stream ended");
                    break;
                }
                Ok(Some(Err(e))) => {
                    println!("consumer stream error: {e}");
                    let r = tokio::time::timeout(
                        Duration::from_secs(30),
                        consumer_channel.wait_for_recovery(e),
                    )
                    .await;
                    println!("consumer wait_for_recovery: {r:?}");
                }
                Ok(Some(Ok(d))) => {
                    println!(
                        "consumer stream delivered {:?} (redelivered: {})",
                        String::from_utf8_lossy(&d.data),
                        d.redelivered
                    );
                    let r = d.acker.ack(BasicAckOptions::default()).await;
                    println!("ack after recovery: {r:?}");
                }
            }
        }
        let _ = publisher
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    };
    tokio::time::timeout(Duration::from_secs(120), probe)
        .await
        .expect("probe finished in bounded time");
}
