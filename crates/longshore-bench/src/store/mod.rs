//! The raw event store sides: raw sqlx doing what the Postgres ([`postgres`]) and SQLite
//! ([`sqlite`]) event stores and the outbox relay do, and reading through the store.

use longshore_core::{EventStore, Message};

use crate::raw::RawClient;

pub mod postgres;
pub mod sqlite;

/// Reads every event through the store, in pages of `page`; returns (events, per-page µs).
pub async fn store_read_all(
    store: &dyn EventStore,
    page: usize,
) -> crate::Result<(usize, Vec<u64>)> {
    let (mut after, mut n, mut lat) = (0, 0, Vec::new());
    loop {
        let t = std::time::Instant::now();
        let events = store.read_all(after, page).await?;
        lat.push(t.elapsed().as_micros() as u64);
        let Some(last) = events.last() else {
            return Ok((n, lat));
        };
        after = last.position;
        n += events.len();
    }
}

/// The publishing half of a raw relay pass, the same for every store: `claimed` rows (seq,
/// topic, message) in seq order go out with the raw client, each run of one topic as one
/// pipelined batch; returns the seqs sent, to delete.
pub async fn publish_in_topic_runs(
    raw: &dyn RawClient,
    claimed: Vec<(i64, String, Message)>,
) -> crate::Result<Vec<i64>> {
    let mut seqs = Vec::with_capacity(claimed.len());
    let mut run: Vec<Message> = Vec::new();
    let mut run_topic = String::new();
    for (seq, topic, mut m) in claimed {
        if topic != run_topic && !run.is_empty() {
            raw.publish_batch(&run_topic, &run).await?;
            run.clear();
        }
        run_topic = topic;
        crate::work::with_traceparent(&mut m);
        run.push(m);
        seqs.push(seq);
    }
    if !run.is_empty() {
        raw.publish_batch(&run_topic, &run).await?;
    }
    Ok(seqs)
}
