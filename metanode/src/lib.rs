//! Strata's MetaNode: a Raft group (openraft, log and state machine on RocksDB) that
//! maps LogStreams and extents to datanode devices, and nothing per object. See
//! `ARCHITECTURE.md` for the shape and `API.md` for the HTTP API.

pub mod api;
pub mod limits;
pub mod metrics;
pub mod network;
pub mod node;
pub mod placement;
pub mod repair;
pub mod state;
pub mod statebench;
pub mod store;

use std::io::Cursor;

pub use node::{MetaNode, Settings};

openraft::declare_raft_types!(
    /// Raft types of the metanode group.
    pub TypeConfig:
        D = state::Command,
        R = state::Outcome,
        Node = openraft::BasicNode,
);
