//! LogStreams, first cut (issue 4 builds on this): a writer that owns a stream's epoch,
//! fans every append out to all replicas itself, acknowledges only when every replica
//! acknowledged, rotates to a new extent when one fills up, and on a replica failure
//! seals the extent at the length every replica acknowledged, allocates a new one on
//! healthy nodes and re-appends. Readers verify each slice's CRC32C and fall back to
//! another replica on error or mismatch.
//!
//! `ec:K+M` streams (issue 6) go the same way with one shard per replica: the writer
//! encodes each append into K+M shards (`stripe.rs`, in the caller's `submit`) and sends
//! shard i to replica i; an append is acknowledged when all K+M shards are durable.
//! Reads go to the data shards and decode from any K of K+M when one is missing, slow
//! or corrupt; a whole slice is always checked against its CRC32C.
//!
//! Extent locations are cached per `StreamClient` (the writer's own allocations, and
//! whatever reads learnt), and refreshed from the metanode when a read through them
//! fails.
//!
//! This file holds what readers and writers share: the types callers see, the config,
//! and the client's caches and connections. The reader (with the EC hedge) is `read.rs`,
//! the writer and its driver task `write.rs`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proto::meta::{ExtentInfo, MetaError, NodeInfo, Policy, StreamId, StreamInfo, StreamView};
use proto::{ExtentError, ExtentId, NodeId, APPEND_BYTES_MAX};

use crate::ec::Simd;
use crate::limits::{
    ALLOCATE_PAUSE_DEFAULT, APPEND_DEADLINE_DEFAULT, CONNECT_TIMEOUT_DEFAULT, EC_HEDGE_DEFAULT,
    EXTENT_BYTES_MAX_DEFAULT, IDLE_SEAL_DEFAULT, REPLICA_TIMEOUT_DEFAULT, SEAL_TIMEOUT_DEFAULT,
};
use crate::{ClientError, DataNodeClient, MetaClient};

mod read;
mod write;

pub use write::{floor_of, Floor, StreamWriter};
// Public here first; they live in `limits.rs` with the others.
pub use crate::limits::{WRITER_IN_FLIGHT_BYTES_MAX, WRITER_IN_FLIGHT_MAX};

/// Where an append's bytes are: enough to read them back and check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slice {
    pub extent: ExtentId,
    pub offset: u64,
    pub len: u32,
    pub crc: u32,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    #[error("fenced: another writer opened the stream ({0})")]
    Fenced(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("append of {0} bytes is larger than the {APPEND_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    #[error("the cluster could not take the write within {deadline:?}: {last}")]
    Unavailable { deadline: Duration, last: String },
    /// The cluster has no room for the append: too few datanodes have space for a new
    /// extent. Space comes back when GC reclaims deleted data; the writer stays usable.
    #[error("the cluster is out of space: {0}")]
    NoSpace(String),
    #[error("cannot read {offset}+{len} of extent {extent}: {why}")]
    Unreadable { extent: ExtentId, offset: u64, len: u32, why: String },
    #[error("this client's erasure codec cannot code {0}")]
    Unsupported(Policy),
    #[error("erasure coding failed: {0}")]
    Codec(String),
}

/// Why one replica (or EC shard) did not serve a request. A writer seals the extent and
/// moves on, a reader tries another copy; a `Corrupt` copy is also reported as bad.
#[derive(Debug, Clone, thiserror::Error)]
enum ReplicaFailure {
    /// No answer within the stream config's timeout.
    #[error("datanode {node}: no answer within {after:?}")]
    Timeout { node: NodeId, after: Duration },
    /// No connection: the datanode's address is unknown or unreachable, or the connection
    /// broke (what a request on it did is unknown).
    #[error("datanode {node}: {why}")]
    Connect { node: NodeId, why: String },
    /// The copy's bytes are not what was written.
    #[error("datanode {node}: {why}")]
    Corrupt { node: NodeId, why: Corruption },
    /// The datanode answered with its refusal (`ClientError::Extent`, as typed on the
    /// wire), or with something this client did not ask for.
    #[error("datanode {node}: {error}")]
    Refused { node: NodeId, error: ClientError },
}

/// How a copy was found bad (what the metanode is told).
#[derive(Debug, Clone, thiserror::Error)]
enum Corruption {
    #[error("returned {got} bytes for {want}")]
    Length { got: usize, want: u32 },
    #[error("bytes at {offset}+{len} do not match their CRC")]
    Crc { offset: u64, len: u32 },
    /// The datanode's check of the CRCs it stored failed (`ChecksumMismatch`).
    #[error(transparent)]
    Stored(ExtentError),
    /// An EC shard that the others, decoded without it, prove wrong.
    #[error("shard {shard} at {offset}+{len} disagrees with the others")]
    Disagrees { shard: usize, offset: u64, len: u64 },
}

/// `request` to `node`, given up after `after`: its answer, or how the replica failed.
async fn within<T>(
    node: NodeId,
    after: Duration,
    request: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ReplicaFailure> {
    match tokio::time::timeout(after, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e @ ClientError::Connection(_))) => Err(ReplicaFailure::Connect { node, why: e.to_string() }),
        Ok(Err(error)) => Err(ReplicaFailure::Refused { node, error }),
        Err(_) => Err(ReplicaFailure::Timeout { node, after }),
    }
}

/// How a `StreamClient` reads and writes; `default()` takes the defaults in `limits.rs`.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Rotate to a new extent before an append would take one past this size.
    pub extent_bytes_max: u64,
    /// A replica that has not answered an append within this is treated as failed.
    pub replica_timeout: Duration,
    /// How long one append keeps sealing, allocating and retrying before giving up.
    pub append_deadline: Duration,
    /// An EC read whose data shards are not all in by then also reads the parity shards
    /// and decodes from the first K (and so does a ranged read, from the whole slice).
    pub ec_hedge: Duration,
    /// Connecting to a datanode gives up after this.
    pub connect_timeout: Duration,
    /// After a failed allocation, the writer waits this long before it asks again.
    pub allocate_pause: Duration,
    /// Each replica's best-effort seal waits this long (the metanode's seal is what counts).
    pub seal_timeout: Duration,
    /// A writer seals its open extent once it holds acknowledged bytes and no append
    /// was queued or answered for this long (`None`: never for idleness).
    pub idle_seal: Option<Duration>,
}

impl Default for StreamConfig {
    fn default() -> StreamConfig {
        StreamConfig {
            extent_bytes_max: EXTENT_BYTES_MAX_DEFAULT,
            replica_timeout: REPLICA_TIMEOUT_DEFAULT,
            append_deadline: APPEND_DEADLINE_DEFAULT,
            ec_hedge: EC_HEDGE_DEFAULT,
            connect_timeout: CONNECT_TIMEOUT_DEFAULT,
            allocate_pause: ALLOCATE_PAUSE_DEFAULT,
            seal_timeout: SEAL_TIMEOUT_DEFAULT,
            idle_seal: Some(IDLE_SEAL_DEFAULT),
        }
    }
}

/// Connections to datanodes by address, reused across streams.
#[derive(Default)]
struct Pool {
    conns: Mutex<HashMap<String, DataNodeClient>>,
}

impl Pool {
    /// A connection to datanode `node` at `addr` (checked to be that datanode).
    async fn get(&self, addr: &str, node: NodeId, timeout: Duration) -> Result<DataNodeClient, ClientError> {
        if let Some(c) = self.conns.lock().get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(timeout, DataNodeClient::connect_node(addr, node))
            .await
            .map_err(|_| ClientError::Connection(format!("connecting to {addr} timed out")))??;
        self.conns.lock().insert(addr.to_string(), c.clone());
        Ok(c)
    }
}

/// The client side of the cluster: metanode, datanode connections, locations.
#[derive(Clone)]
pub struct StreamClient {
    pub meta: MetaClient,
    pool: Arc<Pool>,
    nodes: Arc<Mutex<HashMap<NodeId, NodeInfo>>>,
    /// Extent locations learnt from the metanode, refreshed when they fail a read.
    extents: Arc<Mutex<HashMap<ExtentId, ExtentInfo>>>,
    /// Decoders for EC reads, by (K, M).
    codecs: Arc<Codecs>,
    /// Datanodes that did not answer a read lately (timeout, no connection), with when:
    /// replica reads try them last until `SUSPECT_FOR` has passed, so that a stopped
    /// or partitioned node costs one timeout, not one per read.
    suspects: Arc<Mutex<HashMap<NodeId, std::time::Instant>>>,
    pub config: StreamConfig,
}

type Codecs = Mutex<HashMap<(usize, usize), Arc<Simd>>>;

impl StreamClient {
    pub fn new(meta: MetaClient, config: StreamConfig) -> StreamClient {
        StreamClient {
            meta,
            pool: Arc::default(),
            nodes: Arc::default(),
            extents: Arc::default(),
            codecs: Arc::default(),
            suspects: Arc::default(),
            config,
        }
    }

    pub async fn create_stream(&self, policy: Policy) -> Result<StreamInfo, StreamError> {
        Ok(self.meta.create_stream(policy).await?)
    }

    fn remember(&self, nodes: &[NodeInfo]) {
        let mut m = self.nodes.lock();
        for n in nodes {
            m.insert(n.id, n.clone());
        }
    }

    async fn addr(&self, node: NodeId) -> Result<String, StreamError> {
        if let Some(n) = self.nodes.lock().get(&node) {
            return Ok(n.addr.clone());
        }
        let all = self.meta.nodes().await?;
        self.remember(&all);
        self.nodes
            .lock()
            .get(&node)
            .map(|n| n.addr.clone())
            .ok_or(StreamError::Meta(MetaError::NoSuchNode { id: node }))
    }

    /// A connection to `node`. When it cannot be made, the node's cached address is
    /// forgotten (a restarted datanode may listen elsewhere) and asked for again next time.
    async fn conn(&self, node: NodeId) -> Result<DataNodeClient, ReplicaFailure> {
        let addr =
            self.addr(node).await.map_err(|e| ReplicaFailure::Connect { node, why: format!("no address: {e}") })?;
        match self.pool.get(&addr, node, self.config.connect_timeout).await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.nodes.lock().remove(&node);
                Err(ReplicaFailure::Connect { node, why: format!("at {addr}: {e}") })
            }
        }
    }

    /// Every stream, without extents.
    pub async fn list_streams(&self) -> Result<Vec<StreamInfo>, StreamError> {
        Ok(self.meta.streams().await?)
    }

    /// A stream with its extents (lengths once sealed) and where they are.
    pub async fn stat(&self, id: StreamId) -> Result<StreamView, StreamError> {
        let v = self.meta.stream(id).await?;
        self.remember(&v.nodes);
        let mut cache = self.extents.lock();
        for e in &v.extents {
            cache.insert(e.id, e.clone());
        }
        Ok(v)
    }

    /// Deletes a stream; its extents become tombstones (the datanodes' copies are GC's to reclaim).
    pub async fn delete_stream(&self, id: StreamId) -> Result<(), StreamError> {
        Ok(self.meta.delete_stream(id).await?)
    }
}
