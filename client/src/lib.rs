//! Strata's client library. For now: [`DataNodeClient`], one multiplexed connection to
//! a datanode speaking `proto`'s frame protocol, and [`MetaClient`], the metanode's
//! HTTP API with leader discovery. LogStreams with fan-out replication
//! (issue 4) are built on it.

pub mod conn;
pub mod meta;
pub mod stream;

pub use conn::{ClientError, DataNodeClient};
pub use meta::MetaClient;
pub use stream::{Slice, StreamClient, StreamConfig, StreamError, StreamWriter};
