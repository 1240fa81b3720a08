//! The scenarios, each run by longshore and by the raw client in alternating order.
//!
//! This file names the workloads (what the command line picks); [`run`] drives them and one
//! file per family measures them: [`publish`] (publish-one, publish-batch,
//! publish-concurrent-C, publish-stream), [`consume`]
//! (transport, end-to-end, drain-backlog) and [`events`] (store appends, read-all, relay).
//! It imports neither the command line nor the report, so both can name a [`Scenario`].

mod consume;
mod events;
mod publish;
mod run;
mod side;

pub use run::run_all;

use crate::backend::Backend;

/// One workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    PublishOne,
    PublishBatch,
    /// C tasks, each publishing one message at a time (C = 1, 64, 512).
    PublishConcurrent1,
    PublishConcurrent64,
    PublishConcurrent512,
    /// One `publish_batch` of the whole round (100,000 messages).
    PublishStream,
    Transport,
    EndToEnd,
    StoreAppend1,
    StoreAppend10,
    ReadAll,
    Relay,
    DrainBacklog,
    /// A backlog over 1,000 keys drained with concurrency 64, each key in order, against the
    /// same drain unordered (issue #17's target: ordered ≥ 0.9× unordered).
    DrainOrdered,
}

impl Scenario {
    pub const ALL: [Scenario; 14] = [
        Scenario::PublishOne,
        Scenario::PublishBatch,
        Scenario::PublishConcurrent1,
        Scenario::PublishConcurrent64,
        Scenario::PublishConcurrent512,
        Scenario::PublishStream,
        Scenario::Transport,
        Scenario::EndToEnd,
        Scenario::StoreAppend1,
        Scenario::StoreAppend10,
        Scenario::ReadAll,
        Scenario::Relay,
        Scenario::DrainBacklog,
        Scenario::DrainOrdered,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::PublishOne => "publish-one",
            Scenario::PublishBatch => "publish-batch",
            Scenario::PublishConcurrent1 => "publish-concurrent-1",
            Scenario::PublishConcurrent64 => "publish-concurrent-64",
            Scenario::PublishConcurrent512 => "publish-concurrent-512",
            Scenario::PublishStream => "publish-stream",
            Scenario::Transport => "transport",
            Scenario::EndToEnd => "end-to-end",
            Scenario::StoreAppend1 => "store-append-1",
            Scenario::StoreAppend10 => "store-append-10",
            Scenario::ReadAll => "read-all",
            Scenario::Relay => "relay",
            Scenario::DrainBacklog => "drain-backlog",
            Scenario::DrainOrdered => "drain-ordered",
        }
    }

    /// Concurrent publishing tasks of a publish-concurrent scenario.
    pub fn callers(self) -> Option<usize> {
        match self {
            Scenario::PublishConcurrent1 => Some(1),
            Scenario::PublishConcurrent64 => Some(64),
            Scenario::PublishConcurrent512 => Some(512),
            _ => None,
        }
    }

    /// Whether the raw side is the raw client at its best ([`crate::raw::RawClient::publish_best`])
    /// rather than the same pattern as longshore's.
    pub fn against_best(self) -> bool {
        self.callers().is_some() || self == Scenario::PublishStream
    }

    /// What the raw side is when it is not the backend's raw client.
    pub fn baseline(self) -> Option<&'static str> {
        (self == Scenario::DrainOrdered).then_some("longshore, unordered")
    }

    pub fn from_name(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }

    fn applies(self, b: Backend) -> bool {
        match self {
            Scenario::StoreAppend1 | Scenario::StoreAppend10 | Scenario::ReadAll => b.has_store(),
            _ => true,
        }
    }

    /// What the latency columns measure.
    pub fn latency_of(self) -> &'static str {
        match self {
            Scenario::PublishOne => "one confirmed publish",
            Scenario::PublishBatch => "one batch of 100",
            Scenario::PublishConcurrent1
            | Scenario::PublishConcurrent64
            | Scenario::PublishConcurrent512 => "one confirmed publish (longshore side)",
            Scenario::PublishStream => "the whole batch",
            Scenario::EndToEnd => "publish → handled",
            Scenario::StoreAppend1 | Scenario::StoreAppend10 => "one transaction",
            Scenario::ReadAll => "one page of 500",
            Scenario::Relay => "one relay pass (100 rows)",
            Scenario::Transport | Scenario::DrainBacklog | Scenario::DrainOrdered => "–",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Scenario::StoreAppend1 | Scenario::StoreAppend10 | Scenario::ReadAll => "events/s",
            _ => "msg/s",
        }
    }

    /// Items per side and round (messages, or transactions for appends).
    fn count(self, b: Backend, quick: bool) -> usize {
        use Backend::*;
        if quick {
            return match (self, b) {
                (Scenario::PublishOne | Scenario::PublishConcurrent1, Kafka) => 5,
                (Scenario::PublishOne | Scenario::PublishConcurrent1, _) => 20,
                (Scenario::PublishConcurrent64 | Scenario::PublishConcurrent512, _) => 1_024,
                (Scenario::StoreAppend1, _) => 20,
                (Scenario::StoreAppend10, _) => 5,
                _ => 200,
            };
        }
        match (self, b) {
            // Below the memory broker's default depth (100,000): nothing consumes here.
            (Scenario::PublishOne | Scenario::PublishConcurrent1, Memory) => 90_000,
            (Scenario::PublishOne | Scenario::PublishConcurrent1, Kafka) => 300,
            (Scenario::PublishOne | Scenario::PublishConcurrent1, _) => 2_000,
            (Scenario::PublishConcurrent64 | Scenario::PublishConcurrent512, Memory) => 90_000,
            (Scenario::PublishConcurrent64 | Scenario::PublishConcurrent512, Kafka | Nats) => {
                50_000
            }
            (Scenario::PublishConcurrent64 | Scenario::PublishConcurrent512, _) => 20_000,
            (Scenario::PublishStream, Memory) => 90_000,
            (Scenario::PublishStream, _) => 100_000,
            (Scenario::PublishBatch, Memory) => 90_000,
            (Scenario::PublishBatch, Nats) => 50_000,
            (Scenario::PublishBatch, _) => 20_000,
            (Scenario::Transport, Memory) => 1_000_000,
            // SQLite: every ack is a commit, and under FULL each one syncs the WAL.
            (Scenario::Transport, Rabbitmq | Postgres | Sqlite) => 10_000,
            (Scenario::Transport, _) => 50_000,
            (Scenario::EndToEnd, Memory) => 1_000_000,
            (Scenario::EndToEnd, Postgres | Sqlite) => 5_000,
            (Scenario::EndToEnd, _) => 20_000,
            (Scenario::StoreAppend1, Memory) => 50_000,
            (Scenario::StoreAppend1, _) => 1_000,
            (Scenario::StoreAppend10, Memory) => 10_000,
            (Scenario::StoreAppend10, _) => 300,
            (Scenario::ReadAll, Memory) => 200_000,
            (Scenario::ReadAll, _) => 20_000,
            (Scenario::Relay, Memory) => 20_000,
            (Scenario::Relay, _) => 10_000,
            (Scenario::DrainBacklog | Scenario::DrainOrdered, Memory) => 1_000_000,
            (Scenario::DrainBacklog | Scenario::DrainOrdered, Rabbitmq) => 50_000,
            (Scenario::DrainBacklog | Scenario::DrainOrdered, Postgres | Sqlite) => 20_000,
            (Scenario::DrainBacklog | Scenario::DrainOrdered, _) => 100_000,
        }
    }
}
