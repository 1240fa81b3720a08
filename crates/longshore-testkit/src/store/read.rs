//! Reading: one stream by version, and every stream in one global order.

use longshore_core::ExpectedVersion;

use super::ev;
use crate::{Names, StoreFactory};

/// `read_stream` honours `from` (inclusive) and `limit`.
pub async fn read_stream_from_and_limit(f: &impl StoreFactory) {
    let store = f.store().await;
    let s = Names::new().sub("page");
    store
        .append(&s, ExpectedVersion::Any, (1..=10).map(ev).collect())
        .await
        .expect("append");
    let page: Vec<u64> = store
        .read_stream(&s, 4, 3)
        .await
        .expect("read")
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(page, vec![4, 5, 6]);
    assert!(store.read_stream(&s, 11, 3).await.expect("read").is_empty());
}

/// `read_all` returns every event once, in one increasing global order, paging by position.
pub async fn read_all_global_order(f: &impl StoreFactory) {
    let store = f.store().await;
    let n = Names::new();
    let mut ids = Vec::new();
    for i in 0..10 {
        let s = n.sub(&format!("s{}", i % 3));
        let e = ev(i);
        ids.push(e.id);
        store
            .append(&s, ExpectedVersion::Any, vec![e])
            .await
            .expect("append");
    }
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(after, 4).await.expect("read_all");
        if page.is_empty() {
            break;
        }
        for r in page {
            assert!(r.position > after, "positions must increase");
            after = r.position;
            seen.push(r.event.id);
        }
    }
    assert_eq!(seen, ids);
}
