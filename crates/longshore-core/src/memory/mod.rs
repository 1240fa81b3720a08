//! The in-memory adapter: every port, in process, with broker semantics. The embedded default
//! for examples and tests; nothing survives the process.
//!
//! Laid out on the adapter template (see ARCHITECTURE.md): `config`, `client` (the state all
//! handles share), `broker` (the handle), `publisher`, `subscriber`, `acker`; then what only
//! memory has: `queue` (one subscription's messages), `timers` (scheduled messages), `store` and `inbox`.

mod acker;
mod broker;
mod client;
mod config;
mod inbox;
mod publisher;
mod queue;
mod store;
mod subscriber;
#[cfg(test)]
mod tests;
mod timers;

pub use broker::MemoryBroker;
pub use config::MemoryConfig;
pub use inbox::MemoryInbox;
pub use publisher::MemoryPublisher;
pub use store::MemoryStore;
pub use subscriber::MemorySubscriber;

/// Backend name used in capabilities, health and errors.
pub const BACKEND: &str = "memory";
