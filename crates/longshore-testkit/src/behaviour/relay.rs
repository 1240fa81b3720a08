//! The outbox relay on each broker: an event type no subscription is bound to is unroutable
//! (on RabbitMQ a permanent error); its row must not hold back the other 99.

use std::sync::Arc;
use std::time::Duration;

use longshore_core::memory::MemoryStore;
use longshore_core::{Event, Outbox, Subscription};

use crate::fixture::Fixture;
use crate::store::relay::{
    append_with_one_refused, check_parked_and_retry, receive_all_but_one, spawn_relay,
};
use crate::Names;

/// 100 events relayed from an outbox to the broker under test, one of an event type nothing
/// subscribes to. Every other event arrives, in order per aggregate. Where the broker refuses
/// the unroutable one (RabbitMQ, with `unroutable=error`, the default), it is parked with the
/// error and can be retried; elsewhere the broker takes it and nobody receives it.
pub async fn relay_skips_an_unroutable_event_type(f: &Fixture) {
    let n = Names::new();
    // Event types of this test alone, so no other test's subscription routes them.
    let ok_type = format!("{}_placed", n.prefix());
    let lost_type = format!("{}_unrouted", n.prefix());
    let sub = Subscription::new(n.sub("relay"), [format!("events.{ok_type}")]).with_prefetch(200);
    let scene = f.scene();
    scene.ensure(&sub).await;
    let mut stream = scene.subscribe(&sub).await;
    let store = MemoryStore::with_outbox();
    let written = append_with_one_refused(&store, &n, &ok_type, |i| {
        Event::new(lost_type.clone(), serde_json::json!({ "i": i }))
    })
    .await;
    let outbox: Arc<dyn Outbox> = Arc::new(store.clone());
    let relay = spawn_relay(&n.sub("relay"), outbox.clone(), f.publisher());
    receive_all_but_one(&mut stream, &written).await;
    relay.shutdown(Duration::from_secs(30)).await;
    let parked = outbox.failed_count().await.expect("failed count");
    if f.backend() == "rabbitmq" {
        assert_eq!(
            parked, 1,
            "RabbitMQ returns an unroutable message: it is parked"
        );
    }
    if parked == 1 {
        check_parked_and_retry(&*outbox, &written, &format!("events.{lost_type}")).await;
    } else {
        assert_eq!(parked, 0);
        assert_eq!(
            outbox.pending().await.expect("pending"),
            0,
            "the broker took it"
        );
    }
}
