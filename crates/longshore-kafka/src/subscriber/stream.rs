//! The delivery stream of one consumer: the async end of the consumer thread's channel, turning
//! each fetched record into a [`Delivery`] with its acker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::stream;
use longshore_core::{Delivery, DeliveryStream, Error};
use tokio::sync::mpsc as tmpsc;

use crate::acker::{AckCtx, KafkaAcker};
use crate::command::{Cmd, Pending};

/// The receiving end of a consumer. It holds a command sender, so the thread never mistakes
/// "no ackers left" for "everyone is gone" while the stream lives. Dropping it marks the
/// member as leaving at once (before the thread notices) and hands every message still in
/// the channel back as a nack, so the thread's in-flight count drops to zero.
pub(super) struct StreamState {
    pub rx: tmpsc::UnboundedReceiver<Result<Pending, Error>>,
    pub ctx: Arc<AckCtx>,
    pub leaving: Arc<AtomicBool>,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        self.leaving.store(true, Ordering::Release);
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Ok(pending) = item {
                let _ = self.ctx.cmd.send(Cmd::Nack {
                    pending,
                    delay: None,
                });
            }
        }
    }
}

impl StreamState {
    /// The deliveries, unpacked here, on the consumer's task, not on the librdkafka thread.
    pub fn into_stream(self) -> DeliveryStream {
        Box::pin(stream::unfold(self, |mut state| async move {
            let item = state.rx.recv().await?.map(|p: Pending| {
                let (message, topic) = p.packed.unpack();
                let attempt = p.attempt;
                let acker = KafkaAcker::new(state.ctx.clone(), p);
                Delivery::new(message, topic, attempt, Box::new(acker))
            });
            Some((item, state))
        }))
    }
}
