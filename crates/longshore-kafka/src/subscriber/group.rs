//! A consumer's group membership: librdkafka's rebalance callbacks, which keep the
//! [`GroupState`] up to date, and the calls on the assigned partitions (store offsets, pause,
//! resume).

use std::sync::{Arc, Mutex};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::client::{client_error, lock, log};
use crate::group_state::GroupState;
use crate::offsets::Tp;

/// The librdkafka consumer of one group member.
pub(super) type GroupConsumer = BaseConsumer<GroupContext>;

/// The consumer's librdkafka context: logs to `tracing`, tracks rebalances in [`GroupState`].
pub(super) struct GroupContext {
    pub state: Arc<Mutex<GroupState>>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        client_error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut s = lock(&self.state);
            for e in tpl.elements() {
                let tp: Tp = (e.topic().into(), e.partition());
                s.offsets.revoke(&tp);
                s.to_store.remove(&tp);
                s.assigned.remove(&tp);
            }
            tracing::debug!(subscription = %s.name, partitions = tpl.count(), "kafka: partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut s = lock(&self.state);
        match rebalance {
            Rebalance::Assign(tpl) => {
                for e in tpl.elements() {
                    let tp: Tp = (e.topic().into(), e.partition());
                    s.offsets.assign(tp.clone());
                    s.assigned.insert(tp);
                }
                if s.paused_all && tpl.count() > 0 {
                    if let Err(e) = consumer.pause(tpl) {
                        tracing::warn!(error = %e, "kafka: pausing new partitions failed");
                    }
                }
                tracing::debug!(subscription = %s.name, partitions = tpl.count(), "kafka: partitions assigned");
                s.report_joined(Ok(()));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(subscription = %s.name, error = %e, "kafka: rebalance error")
            }
        }
    }
}

/// Hands the settled positions (next offset to read, per partition) to librdkafka's offset
/// store, from where auto-commit commits them.
pub(super) fn flush_stores(consumer: &GroupConsumer, state: &Mutex<GroupState>) {
    let pending = {
        let mut s = lock(state);
        if s.to_store.is_empty() {
            return;
        }
        std::mem::take(&mut s.to_store)
    };
    let mut tpl = TopicPartitionList::with_capacity(pending.len());
    for ((topic, partition), pos) in &pending {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*pos)) {
            tracing::warn!(error = %e, "kafka: bad offset");
        }
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Typically a partition was revoked a moment ago: the next owner redelivers.
        tracing::debug!(error = %e, "kafka: offsets not stored");
    }
}

fn assigned_tpl(state: &Mutex<GroupState>) -> TopicPartitionList {
    let s = lock(state);
    let mut tpl = TopicPartitionList::with_capacity(s.assigned.len());
    for (t, p) in &s.assigned {
        tpl.add_partition(t, *p);
    }
    tpl
}

/// Pauses fetching from every assigned partition.
pub(super) fn pause_assigned(consumer: &GroupConsumer, state: &Mutex<GroupState>) {
    let tpl = assigned_tpl(state);
    if tpl.count() > 0 {
        if let Err(e) = consumer.pause(&tpl) {
            tracing::warn!(error = %e, "kafka: pause failed");
        }
    }
}

/// Pauses every assigned partition for good (the stream is gone); partitions assigned later
/// are paused on assignment.
pub(super) fn pause_everything(consumer: &GroupConsumer, state: &Mutex<GroupState>) {
    let first = {
        let mut s = lock(state);
        !std::mem::replace(&mut s.paused_all, true)
    };
    if first {
        pause_assigned(consumer, state);
    }
}

/// Resumes fetching from every assigned partition.
pub(super) fn resume(consumer: &GroupConsumer, state: &Mutex<GroupState>) {
    let tpl = assigned_tpl(state);
    if tpl.count() > 0 {
        if let Err(e) = consumer.resume(&tpl) {
            tracing::warn!(error = %e, "kafka: resume failed");
        }
    }
}
