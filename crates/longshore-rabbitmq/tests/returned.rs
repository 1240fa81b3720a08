//! A message RabbitMQ returns (no queue bound for its topic) is reported by the adapter in one
//! WARN line naming the exchange, the topic, the message id and the fix, and the publish fails
//! with a permanent `Error::Rejected`.

mod common;

use longshore_core::{Broker, Error, Message};
use longshore_testkit::observe::{events, install};
use longshore_testkit::Names;

#[tokio::test]
async fn a_returned_message_is_one_line_naming_exchange_topic_id_and_fix() {
    install();
    let Some(broker) = common::broker_with(|c| c).await else {
        return;
    };
    let n = Names::new();
    let topic = n.topic("nobody.listens");
    let message = Message::new("x");
    let id = message.id.clone();
    let e = broker
        .publisher()
        .publish(&topic, message)
        .await
        .expect_err("no queue is bound");
    assert!(
        matches!(
            e,
            Error::Rejected {
                retryable: false,
                ..
            }
        ),
        "{e:?}"
    );
    let lines = events("longshore_rabbitmq", "message_id", &id);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line.level, "WARN");
    assert_eq!(line.fields.get("topic"), Some(&topic));
    assert_eq!(
        line.fields.get("exchange").map(String::as_str),
        Some(broker.config().exchange.as_str())
    );
    let text = line.fields.get("message").cloned().unwrap_or_default();
    assert!(
        text.contains("unroutable=accept") && text.contains("consumer"),
        "{text}"
    );
}
