//! Limits: the declared payload limit holds exactly, empty batches are no-ops, and bad names
//! are typed errors.

use longshore_core::{Error, Message, Subscription};

use crate::helpers::{drain_ids, expect_quiet, message, recv};
use crate::Fixture;

/// An empty batch is a no-op.
pub async fn empty_batch_is_ok(f: &Fixture) {
    let s = f.scene();
    s.publish_batch(&s.topic("empty"), Vec::new()).await;
}

/// The largest payload the backend declares (1 MiB where the limit allows) goes through intact.
pub async fn large_payload_at_limit(f: &Fixture) {
    let s = f.scene();
    let size = s.publisher.capabilities().max_payload.min(1024 * 1024);
    let (topic, mut stream) = s.open("large").await;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let m = Message::new(payload);
    s.publish(&topic, m.clone()).await;
    let d = recv(&mut stream).await;
    assert_eq!(d.message().payload.len(), size);
    assert_eq!(d.message().payload, m.payload);
    d.ack().await.expect("ack");
}

/// One byte over the declared limit is a typed error before anything is sent, alone or in a
/// batch (where the valid messages are still sent).
pub async fn oversized_payload_is_rejected(f: &Fixture) {
    let s = f.scene();
    let limit = s.publisher.capabilities().max_payload;
    let (topic, mut stream) = s.open("oversized").await;
    let big = Message::new(vec![b'x'; limit + 1]);
    match s.publisher.publish(&topic, big.clone()).await {
        Err(Error::PayloadTooLarge { size, limit: l }) => assert_eq!((size, l), (limit + 1, limit)),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    let ok = message(1);
    let err = s
        .publisher
        .publish_batch(&topic, vec![ok.clone(), big])
        .await
        .expect_err("batch with oversized");
    assert_eq!(err.failed.len(), 1);
    assert_eq!(err.failed[0].index, 1);
    assert!(matches!(err.failed[0].error, Error::PayloadTooLarge { .. }));
    assert_eq!(drain_ids(&mut stream, 1).await, vec![ok.id]);
    expect_quiet(&mut stream, "the oversized message must not be sent").await;
}

/// Bad topics, patterns and subscription names are typed errors.
pub async fn invalid_names_are_rejected(f: &Fixture) {
    let s = f.scene();
    for topic in ["", "a..b", "a.*", "a.#", "a b", "a/b", "ä"] {
        let r = s.publisher.publish(topic, message(1)).await;
        assert!(
            matches!(r, Err(Error::InvalidName { .. })),
            "topic {topic:?}: {r:?}"
        );
    }
    for (name, pattern) in [
        ("", "a"),
        ("ok", ""),
        ("has space", "a"),
        ("ok", "a.**"),
        ("ok", "a..b"),
        ("-x", "a"),
    ] {
        let r = s
            .subscriber
            .subscribe(&Subscription::new(name, [pattern]))
            .await;
        assert!(
            matches!(r, Err(Error::InvalidName { .. })),
            "{name:?}/{pattern:?}: {:?}",
            r.err()
        );
    }
    let r = s
        .subscriber
        .subscribe(&Subscription::new("no-patterns", Vec::<String>::new()))
        .await;
    assert!(matches!(r, Err(Error::InvalidName { .. })));
}
