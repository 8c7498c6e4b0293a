//! Strata DataNode: extents on blob stores, served over `proto`'s frame protocol.

pub mod align;
pub mod blobstore;
pub mod config;
pub mod extent;
pub mod heartbeat;
mod le;
pub mod limits;
pub mod metrics;
pub mod pace;
pub mod rebuild;
pub mod scrub;
pub mod server;
