//! The in-memory baseline: a tokio mpsc channel per topic (no broker, no confirmation).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use futures::StreamExt;
use longshore_core::{Message, Subscription};
use tokio::sync::mpsc;

use super::{Consume, ConsumerTask, RawClient};
use crate::measure::{parse_stamp, SENT_HEADER};

type Channel = (
    mpsc::UnboundedSender<Message>,
    Option<mpsc::UnboundedReceiver<Message>>,
);

/// Topic → channel; one consumer per topic.
#[derive(Default)]
pub struct RawMemory {
    topics: Mutex<HashMap<String, Channel>>,
}

impl RawMemory {
    fn sender(&self, topic: &str) -> crate::Result<mpsc::UnboundedSender<Message>> {
        let topics = self.topics.lock().map_err(|_| "poisoned")?;
        topics
            .get(topic)
            .map(|(tx, _)| tx.clone())
            .ok_or_else(|| format!("no channel for {topic}").into())
    }
}

#[async_trait]
impl RawClient for RawMemory {
    async fn prepare(&self, sub: &Subscription) -> crate::Result<()> {
        let mut topics = self.topics.lock().map_err(|_| "poisoned")?;
        for p in &sub.patterns {
            let (tx, rx) = mpsc::unbounded_channel();
            topics.insert(p.clone(), (tx, Some(rx)));
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, m: &Message) -> crate::Result<()> {
        self.sender(topic)?.send(m.clone()).map_err(|_| "closed")?;
        Ok(())
    }

    async fn publish_batch(&self, topic: &str, ms: &[Message]) -> crate::Result<()> {
        let tx = self.sender(topic)?;
        for m in ms {
            tx.send(m.clone()).map_err(|_| "closed")?;
        }
        Ok(())
    }

    async fn start_consumer(&self, c: Consume<'_>) -> crate::Result<ConsumerTask> {
        let rx = {
            let mut topics = self.topics.lock().map_err(|_| "poisoned")?;
            topics
                .get_mut(c.topic)
                .and_then(|(_, rx)| rx.take())
                .ok_or_else(|| format!("no receiver for {}", c.topic))?
        };
        let (n, concurrency, rec) = (c.n, c.concurrency, c.rec);
        Ok(tokio::spawn(async move {
            tokio_stream_take(rx, n)
                .for_each_concurrent(concurrency, |m| {
                    let rec = rec.clone();
                    async move {
                        rec.handle_raw(
                            &m.payload,
                            parse_stamp(m.headers.get(SENT_HEADER).map(String::as_str)),
                        );
                    }
                })
                .await;
            Ok(())
        }))
    }

    async fn cleanup(&self, sub: &Subscription) -> crate::Result<()> {
        let mut topics = self.topics.lock().map_err(|_| "poisoned")?;
        for p in &sub.patterns {
            topics.remove(p);
        }
        Ok(())
    }
}

/// The first `n` messages of a receiver, as a stream.
fn tokio_stream_take(
    rx: mpsc::UnboundedReceiver<Message>,
    n: usize,
) -> impl futures::Stream<Item = Message> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) }).take(n)
}
