//! The in-memory adapter: every port, in process, with broker semantics. The embedded default
//! for examples and tests; nothing survives the process.

mod broker;
mod consumer;
mod inbox;
mod queue;
mod store;
#[cfg(test)]
mod tests;

pub use broker::{MemoryBroker, MemoryConfig, MemoryPublisher, MemorySubscriber};
pub use inbox::MemoryInbox;
pub use store::MemoryStore;
