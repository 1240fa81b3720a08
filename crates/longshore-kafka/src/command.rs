//! What a consumer thread is told over its command channel (settlements from ackers and
//! streams, topic changes, close), and the unsettled delivery a nack hands back.

use std::time::Duration;

use crate::mapping::Packed;
use crate::offsets::Tp;

/// A command to a consumer thread.
pub(crate) enum Cmd {
    /// The delivery at this offset is done (acked or dead-lettered).
    Settle { tp: Tp, epoch: u64, offset: i64 },
    /// Redeliver (after `delay`).
    Nack {
        pending: Pending,
        delay: Option<Duration>,
    },
    /// The Kafka topics to read changed (wildcard patterns).
    Topics(Vec<String>),
    /// End the stream and close the consumer now.
    Close,
}

/// A fetched message that is not settled yet.
#[derive(Clone)]
pub(crate) struct Pending {
    /// The partition it came from.
    pub tp: Tp,
    /// The partition's assignment generation it was fetched in.
    pub epoch: u64,
    /// Its offset in the partition.
    pub offset: i64,
    /// Deliveries so far, this one included (counted in process).
    pub attempt: u32,
    /// The record.
    pub packed: Packed,
}
