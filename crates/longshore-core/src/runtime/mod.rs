//! The broker-neutral consumer runtime: a fetch loop under flow control feeds key lanes, a
//! fixed pool of workers and batch runners handle what is ready, and every delivery is
//! settled by its own outcome.

mod batch;
mod consumer;
mod flow;
mod handler;
mod lanes;
mod settle;
mod state;
mod stats;
mod worker;

pub use consumer::{Consumer, ConsumerHandle, DEFAULT_LAG_INTERVAL};
pub use flow::{BreakerState, CircuitBreaker, ConsumerHealth, ConsumerProbe};
pub use handler::{HandlerContext, HandlerError, HandlerFuture, HandlerResultExt};
pub use state::WithState;
pub use stats::ConsumerStats;
pub use worker::{ExpiredPolicy, UnknownEventPolicy};

use tokio::sync::watch;

/// Resolves once stop is requested or its sender is dropped.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard returned by `wait_for` is not `Send`; drop it before the caller goes on.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
