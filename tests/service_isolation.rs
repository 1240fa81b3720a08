//! Per-service isolation: two services on one Postgres database, named by
//! `Config::with_service`, get a store schema each, so one's relay never claims the other's
//! outbox rows, while the queue they talk through stays shared; a URL's own `?schema=` wins
//! over the name.

mod common;

use longshore::prelude::*;
use longshore::Config;
use longshore_testkit::Names;

#[cfg(feature = "postgres")]
#[tokio::test]
async fn two_named_services_never_share_an_outbox() {
    let url = common::postgres_url();
    let reachable = longshore::connect(&url).await.map(|_| ());
    if longshore_testkit::require_broker("postgres", &url, reachable).is_none() {
        return;
    }
    let n = Names::new();
    let (a, b) = (
        format!("{}_orders", n.prefix()),
        format!("{}_billing", n.prefix()),
    );
    let orders = longshore::connect_with(&Config::new(url.clone()).with_service(&a))
        .await
        .expect("orders");
    let billing = longshore::connect_with(&Config::new(url.clone()).with_service(&b))
        .await
        .expect("billing");
    orders
        .store()
        .expect("store")
        .append(
            "o-1",
            ExpectedVersion::NoStream,
            vec![Event::new("order_placed", serde_json::json!({}))],
        )
        .await
        .expect("append");
    assert_eq!(
        orders
            .outbox()
            .expect("outbox")
            .pending()
            .await
            .expect("pending"),
        1
    );
    assert_eq!(
        billing
            .outbox()
            .expect("outbox")
            .pending()
            .await
            .expect("pending"),
        0,
        "billing sees none of orders' rows"
    );
    // The same name reaches the same tables (a second replica of the service).
    let replica = longshore::connect_with(&Config::new(url.clone()).with_service(&a))
        .await
        .expect("replica");
    assert_eq!(
        replica
            .outbox()
            .expect("outbox")
            .pending()
            .await
            .expect("pending"),
        1
    );
    // The broker side is shared: the two services still talk through the Postgres queue.
    let sub = Subscription::new(n.sub("billing"), [n.topic("orders")]);
    billing
        .subscriber
        .ensure_subscription(&sub)
        .await
        .expect("ensure");
    let mut stream = billing.subscriber.subscribe(&sub).await.expect("subscribe");
    orders
        .publisher
        .publish(&n.topic("orders"), Message::new("o-1"))
        .await
        .expect("publish");
    let d = longshore_testkit::recv(&mut stream).await;
    assert_eq!(&d.message().payload[..], b"o-1");
    d.ack().await.expect("ack");
    // `?schema=` wins over the name.
    let sep = if url.contains('?') { '&' } else { '?' };
    let explicit =
        longshore::connect_with(&Config::new(format!("{url}{sep}schema={b}")).with_service(&a))
            .await
            .expect("explicit");
    assert_eq!(
        explicit
            .outbox()
            .expect("outbox")
            .pending()
            .await
            .expect("pending"),
        0
    );
}
