//! lapin as a peer that is not longshore: publishes straight to the exchange, past every limit
//! longshore's publisher keeps, for the suite's bad-input scenarios.

use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use longshore_core::async_trait;
use longshore_rabbitmq::DEFAULT_EXCHANGE;
use longshore_testkit::RawPublisher;

/// A confirm channel of its own connection.
pub struct RawLapin {
    channel: Channel,
    _connection: Connection,
}

/// Opens the raw client on `url` (the suite's `raw:` hook).
pub async fn raw(url: &str) -> Arc<dyn RawPublisher> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("raw lapin connection");
    let channel = connection
        .create_channel()
        .await
        .expect("raw lapin channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms on the raw channel");
    Arc::new(RawLapin {
        channel,
        _connection: connection,
    })
}

#[async_trait]
impl RawPublisher for RawLapin {
    async fn publish_raw(
        &self,
        topic: &str,
        id: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<(), String> {
        let mut table = FieldTable::default();
        for (name, value) in headers {
            table.insert(
                name.as_str().into(),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.into())
            .with_headers(table);
        let confirm = self
            .channel
            .basic_publish(
                DEFAULT_EXCHANGE.into(),
                topic.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err(format!("the broker did not confirm: {confirm:?}"))
        }
    }
}
