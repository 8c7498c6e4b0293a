//! LogStreams, first cut (issue 4 builds on this): a writer that owns a stream's epoch,
//! fans every append out to all replicas itself, acknowledges only when every replica
//! acknowledged, rotates to a new extent when one fills up, and on a replica failure
//! seals the extent at the length every replica acknowledged, allocates a new one on
//! healthy nodes and re-appends. Readers verify each slice's CRC32C and fall back to
//! another replica on error or mismatch.
//!
//! Extent locations are cached per `StreamClient` (the writer's own allocations, and
//! whatever reads learnt), and refreshed from the metanode when a read through them
//! fails. Not yet: several appends in flight per stream (appends are applied one at a
//! time, in order), EC policies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use proto::meta::{ExtentInfo, MetaError, NodeInfo, Policy, StreamId, StreamInfo};
use proto::{Epoch, ExtentError, ExtentId, NodeId, APPEND_BYTES_MAX};

use crate::{ClientError, DataNodeClient, MetaClient};

/// Where an append's bytes are: enough to read them back and check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    #[error("no replica of extent {extent} returned good bytes for {offset}+{len}: {why}")]
    Unreadable { extent: ExtentId, offset: u64, len: u32, why: String },
    #[error("only ec:K+M needs erasure coding, which this client cannot write yet: {0}")]
    Unsupported(Policy),
}

#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Rotate to a new extent before an append would take one past this size.
    pub extent_bytes_max: u64,
    /// A replica that has not answered an append within this is treated as failed.
    pub replica_timeout: Duration,
    /// How long one append keeps sealing, allocating and retrying before giving up.
    pub append_deadline: Duration,
}

impl Default for StreamConfig {
    fn default() -> StreamConfig {
        StreamConfig {
            extent_bytes_max: 256 << 20,
            replica_timeout: Duration::from_secs(5),
            append_deadline: Duration::from_secs(30),
        }
    }
}

/// Connections to datanodes by address, reused across streams.
#[derive(Default)]
struct Pool {
    conns: Mutex<HashMap<String, DataNodeClient>>,
}

impl Pool {
    async fn get(&self, addr: &str) -> Result<DataNodeClient, ClientError> {
        if let Some(c) = self.conns.lock().get(addr).filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(Duration::from_secs(2), DataNodeClient::connect(addr))
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
    pub config: StreamConfig,
}

impl StreamClient {
    pub fn new(meta: MetaClient, config: StreamConfig) -> StreamClient {
        StreamClient { meta, pool: Arc::default(), nodes: Arc::default(), extents: Arc::default(), config }
    }

    pub async fn create_stream(&self, policy: Policy) -> Result<StreamInfo, StreamError> {
        Ok(self.meta.create_stream(policy).await?)
    }

    /// Opens `id` for writing under a new epoch (the previous writer is fenced and its
    /// open extent sealed by the metanode).
    pub async fn open_writer(&self, id: StreamId, writer: &str) -> Result<StreamWriter, StreamError> {
        let v = self.meta.open_stream(id, writer).await?;
        if let Policy::Ec { .. } = v.stream.policy {
            return Err(StreamError::Unsupported(v.stream.policy));
        }
        self.remember(&v.nodes);
        let tail = Tail { open: None, last: v.stream.extents.last().copied() };
        Ok(StreamWriter { client: self.clone(), id, epoch: v.stream.epoch, tail: tokio::sync::Mutex::new(tail) })
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

    async fn conn(&self, node: NodeId) -> Result<DataNodeClient, String> {
        let addr = self.addr(node).await.map_err(|e| e.to_string())?;
        self.pool.get(&addr).await.map_err(|e| format!("datanode {node} at {addr}: {e}"))
    }

    /// Reads a slice from one of its replicas, checking its CRC32C; on an error or a
    /// mismatch it reports the bad copy and tries the next replica.
    pub async fn read(&self, s: Slice) -> Result<Bytes, StreamError> {
        let cached = self.extents.lock().get(&s.extent).cloned();
        if let Some(e) = cached {
            match self.read_from(&e, s).await {
                Ok(b) => return Ok(b),
                // The replicas may have moved: ask the metanode once more below.
                Err(err) => tracing::debug!("read from cached locations failed: {err}"),
            }
        }
        let e = self.meta.extent(s.extent).await?;
        self.extents.lock().insert(e.id, e.clone());
        self.read_from(&e, s).await
    }

    async fn read_from(&self, e: &ExtentInfo, s: Slice) -> Result<Bytes, StreamError> {
        let n = e.replicas.len();
        let first = (s.offset / 4096 + s.extent) as usize % n.max(1);
        let mut why = Vec::new();
        for i in 0..n {
            let r = e.replicas[(first + i) % n];
            let c = match self.conn(r.node).await {
                Ok(c) => c,
                Err(w) => {
                    why.push(w);
                    continue;
                }
            };
            let read = tokio::time::timeout(self.config.replica_timeout, c.read(s.extent, s.offset, s.len));
            let Ok(read) = read.await else {
                why.push(format!("datanode {}: no answer within {:?}", r.node, self.config.replica_timeout));
                continue;
            };
            match read {
                Ok(b) if proto::crc32c(&b) == s.crc && b.len() == s.len as usize => return Ok(b),
                Ok(_) => {
                    tracing::warn!(
                        "extent {} on datanode {}: bytes at {} do not match their CRC",
                        s.extent,
                        r.node,
                        s.offset
                    );
                    why.push(format!("datanode {}: CRC mismatch", r.node));
                }
                Err(err) => why.push(format!("datanode {}: {err}", r.node)),
            }
        }
        Err(StreamError::Unreadable { extent: s.extent, offset: s.offset, len: s.len, why: why.join("; ") })
    }
}

struct OpenExtent {
    info: ExtentInfo,
    conns: Vec<DataNodeClient>,
    /// Bytes every replica acknowledged.
    len: u64,
}

struct Tail {
    open: Option<OpenExtent>,
    /// The stream's last extent (sealed), which the next allocation follows.
    last: Option<ExtentId>,
}

/// The one writer of a stream, under its epoch.
pub struct StreamWriter {
    client: StreamClient,
    pub id: StreamId,
    pub epoch: Epoch,
    tail: tokio::sync::Mutex<Tail>,
}

fn fenced(e: &ClientError) -> bool {
    matches!(e, ClientError::Extent(ExtentError::StaleEpoch { .. }))
}

impl StreamWriter {
    /// Appends `data` to every replica of the stream's open extent and returns where it
    /// is once every replica has acknowledged it (made it durable).
    pub async fn append(&self, data: Bytes) -> Result<Slice, StreamError> {
        if data.is_empty() || data.len() > APPEND_BYTES_MAX as usize {
            return Err(StreamError::TooLarge(data.len()));
        }
        let crc = proto::crc32c(&data);
        let cfg = &self.client.config;
        let start = Instant::now();
        let mut tail = self.tail.lock().await;
        let mut last_error = String::new();
        loop {
            if start.elapsed() > cfg.append_deadline {
                return Err(StreamError::Unavailable { deadline: cfg.append_deadline, last: last_error });
            }
            let full = tail.open.as_ref().is_some_and(|o| o.len + data.len() as u64 > cfg.extent_bytes_max);
            if full {
                self.seal_open(&mut tail).await?;
            }
            if tail.open.is_none() {
                if let Err(why) = self.allocate(&mut tail).await? {
                    last_error = why;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let o = tail.open.as_mut().expect("allocated");
            let (extent, offset) = (o.info.id, o.len);
            let sends = o
                .conns
                .iter()
                .map(|c| tokio::time::timeout(cfg.replica_timeout, c.append(extent, offset, self.epoch, data.clone())));
            let results = futures_join(sends).await;
            let mut failure = None;
            for (r, res) in o.info.replicas.iter().zip(results) {
                match res {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) if fenced(&e) => return Err(StreamError::Fenced(e.to_string())),
                    Ok(Err(e)) => failure = Some(format!("datanode {}: {e}", r.node)),
                    Err(_) => {
                        failure = Some(format!("datanode {}: no answer within {:?}", r.node, cfg.replica_timeout))
                    }
                }
            }
            match failure {
                None => {
                    o.len += data.len() as u64;
                    return Ok(Slice { extent, offset, len: data.len() as u32, crc });
                }
                Some(why) => {
                    tracing::warn!("stream {} extent {extent}: {why}; sealing it at {offset} and moving on", self.id);
                    last_error = why;
                    self.seal_open(&mut tail).await?;
                }
            }
        }
    }

    /// Seals the open extent at the length every replica acknowledged: on the
    /// metanode (authoritative) and, best effort, on the replicas.
    async fn seal_open(&self, tail: &mut Tail) -> Result<(), StreamError> {
        let Some(o) = tail.open.take() else { return Ok(()) };
        for c in &o.conns {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.seal(o.info.id, o.len)).await;
        }
        match self.client.meta.seal_extent(o.info.id, self.epoch, o.len).await {
            Ok(_) => {}
            Err(MetaError::Fenced { .. }) => return Err(StreamError::Fenced(format!("sealing extent {}", o.info.id))),
            Err(e) => return Err(e.into()),
        }
        tail.last = Some(o.info.id);
        Ok(())
    }

    /// Allocates the next extent and creates it on every replica. `Ok(Err(why))`: a
    /// replica could not create it (the extent is sealed empty; try again).
    async fn allocate(&self, tail: &mut Tail) -> Result<Result<(), String>, StreamError> {
        let info = match self.client.meta.allocate_extent(self.id, self.epoch, tail.last).await {
            Ok(i) => i,
            Err(MetaError::Fenced { .. }) => return Err(StreamError::Fenced("allocating".into())),
            Err(e @ MetaError::NotEnoughNodes { .. }) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let mut conns = Vec::new();
        let mut failed = None;
        for r in &info.replicas {
            let timeout = self.client.config.replica_timeout;
            match self.client.conn(r.node).await {
                Ok(c) => match tokio::time::timeout(timeout, c.create(info.id, self.epoch, r.device)).await {
                    Ok(Ok(())) => conns.push(c),
                    Ok(Err(e)) => failed = Some(format!("creating extent {} on datanode {}: {e}", info.id, r.node)),
                    Err(_) => failed = Some(format!("creating extent {} on datanode {} timed out", info.id, r.node)),
                },
                Err(why) => failed = Some(why),
            }
        }
        self.client.extents.lock().insert(info.id, info.clone());
        tail.open = Some(OpenExtent { info, conns, len: 0 });
        if let Some(why) = failed {
            tracing::warn!("stream {}: {why}", self.id);
            self.seal_open(tail).await?;
            return Ok(Err(why));
        }
        Ok(Ok(()))
    }

    /// Seals the open extent (if any); the writer can go on appending to a new one.
    pub async fn flush_seal(&self) -> Result<(), StreamError> {
        let mut tail = self.tail.lock().await;
        self.seal_open(&mut tail).await
    }
}

async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("every future finished")).collect()
}
