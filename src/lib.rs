//! placeholder
pub use longshore_core::*;
