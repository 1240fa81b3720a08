//! What both sides of a scenario share: which side runs, in which order, and the steps they
//! take alike (names, batching, publishing a batch, the wait limit).

use std::time::Duration;

use longshore::Longshore;
use longshore_core::{Message, Publisher, Subscription};

use crate::backend::{Backend, Env};
use crate::work::{unique, BATCH};

/// Which side runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Longshore,
    Raw,
}

/// The order of the two sides in round `round`: alternating, so drifting load hits both.
pub fn order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::Longshore, Side::Raw]
    } else {
        [Side::Raw, Side::Longshore]
    }
}

/// A fresh subscription and the one topic it listens to.
pub fn sub_and_topic() -> (Subscription, String) {
    let name = unique("lsb");
    let topic = format!("{name}.evt");
    (Subscription::new(name, [topic.clone()]), topic)
}

/// How long a round may wait for its consumer.
pub fn wait_limit(env: &Env) -> Duration {
    Duration::from_secs(if env.quick { 60 } else { 900 })
}

/// Memory keeps what is published: a fresh broker per side lets it go again.
pub async fn fresh_if_memory(env: &Env, ls: &Longshore) -> crate::Result<Longshore> {
    if env.backend == Backend::Memory {
        env.connect().await
    } else {
        Ok(ls.clone())
    }
}

/// `msgs` cut into batches of [`BATCH`], in order, built before a timing starts.
pub fn batches(msgs: Vec<Message>) -> Vec<Vec<Message>> {
    let mut batches = Vec::with_capacity(msgs.len().div_ceil(BATCH));
    let mut all = msgs.into_iter();
    loop {
        let b: Vec<Message> = all.by_ref().take(BATCH).collect();
        if b.is_empty() {
            break;
        }
        batches.push(b);
    }
    batches
}

/// Publishes one batch on `side`: through longshore's `publisher`, or the raw client.
pub async fn publish_batch(
    env: &Env,
    side: Side,
    publisher: &dyn Publisher,
    topic: &str,
    batch: Vec<Message>,
) -> crate::Result<()> {
    match side {
        Side::Longshore => publisher.publish_batch(topic, batch).await?,
        Side::Raw => env.raw.publish_batch(topic, &batch).await?,
    }
    Ok(())
}
