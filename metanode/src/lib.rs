//! MetaNode: the Raft cluster (openraft, state on RocksDB) that maps streams and
//! extents to datanode devices, places new extents, tracks health and drives repair.
//!
//! Not built yet (issue 3). This crate holds no code so that nothing can mistake it
//! for a working metanode; the datanode and client do not depend on it.
