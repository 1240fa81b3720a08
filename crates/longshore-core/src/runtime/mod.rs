//! The broker-neutral consumer runtime.

mod consumer;
mod handler;
mod stats;

pub use consumer::{Consumer, ConsumerHandle, UnknownEventPolicy, DEFAULT_LAG_INTERVAL};
pub use handler::{HandlerContext, HandlerError, HandlerFuture};
pub use stats::ConsumerStats;
