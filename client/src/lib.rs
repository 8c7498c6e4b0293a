//! Strata's client library. For now: [`DataNodeClient`], one multiplexed connection to
//! a datanode speaking `proto`'s frame protocol. LogStreams with fan-out replication
//! (issue 4) are built on it.

pub mod conn;

pub use conn::{ClientError, DataNodeClient};
