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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::Mutex;
use proto::meta::{ExtentInfo, MetaError, NodeInfo, Policy, StreamId, StreamInfo, StreamView};
use proto::{Epoch, ExtentError, ExtentId, NodeId, Request, Response, APPEND_BYTES_MAX, READ_BYTES_MAX};
use tokio::sync::{mpsc, oneshot};
use tokio::time::error::Elapsed;

use crate::ec::{shard_len, Codec, Simd};
use crate::stripe::{data_pieces, Layout, Payloads};
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
    #[error("cannot read {offset}+{len} of extent {extent}: {why}")]
    Unreadable { extent: ExtentId, offset: u64, len: u32, why: String },
    #[error("this client's erasure codec cannot code {0}")]
    Unsupported(Policy),
    #[error("erasure coding failed: {0}")]
    Codec(String),
}

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
}

impl Default for StreamConfig {
    fn default() -> StreamConfig {
        StreamConfig {
            extent_bytes_max: 256 << 20,
            replica_timeout: Duration::from_secs(5),
            append_deadline: Duration::from_secs(30),
            ec_hedge: Duration::from_millis(250),
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
    /// Decoders for EC reads, by (K, M).
    codecs: Arc<Codecs>,
    pub config: StreamConfig,
}

type Codecs = Mutex<HashMap<(usize, usize), Arc<Simd>>>;

/// What a read asks of one extent.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// A whole slice, checked against its CRC.
    Slice(Slice),
    /// Bytes `[off, off + len)` of a slice.
    Part { s: Slice, off: u64, len: u64 },
    /// Any appended bytes of a replicated extent.
    Range { offset: u64, len: u32 },
}

/// Slice `s` decoded from the shards present (but `skip`), if that gives bytes matching
/// its CRC; otherwise why not.
fn decode(
    codec: &dyn Codec,
    k: usize,
    shards: &[Option<Bytes>],
    skip: Option<usize>,
    s: Slice,
) -> Result<Bytes, String> {
    let mut work: Vec<Option<Vec<u8>>> =
        shards.iter().enumerate().map(|(i, b)| b.as_ref().filter(|_| Some(i) != skip).map(|b| b.to_vec())).collect();
    codec.reconstruct(&mut work).map_err(|e| format!("decoding: {e}"))?;
    let joined = join_data(work[..k].iter().flatten(), s.len as usize);
    if proto::crc32c(&joined) != s.crc {
        return Err("the decoded bytes do not match the slice's CRC".into());
    }
    Ok(joined)
}

/// The first `len` bytes of `pieces` joined (data shards without their padding).
fn join_data<'a>(pieces: impl Iterator<Item = &'a (impl AsRef<[u8]> + 'a)>, len: usize) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(len);
    for p in pieces {
        let p = p.as_ref();
        let take = p.len().min(len - out.len());
        out.extend_from_slice(&p[..take]);
    }
    out.freeze()
}

impl StreamClient {
    pub fn new(meta: MetaClient, config: StreamConfig) -> StreamClient {
        StreamClient {
            meta,
            pool: Arc::default(),
            nodes: Arc::default(),
            extents: Arc::default(),
            codecs: Arc::default(),
            config,
        }
    }

    pub async fn create_stream(&self, policy: Policy) -> Result<StreamInfo, StreamError> {
        Ok(self.meta.create_stream(policy).await?)
    }

    /// Opens `id` for writing under a new epoch (the previous writer is fenced and its
    /// open extent sealed by the metanode).
    pub async fn open_writer(&self, id: StreamId, writer: &str) -> Result<StreamWriter, StreamError> {
        let v = self.meta.open_stream(id, writer).await?;
        let layout = Layout::new(v.stream.policy)?;
        self.remember(&v.nodes);
        let tail = Tail { open: None, last: v.stream.extents.last().copied() };
        let (tx, rx) = mpsc::unbounded_channel();
        let driver = Driver {
            client: self.clone(),
            id,
            epoch: v.stream.epoch,
            tail,
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            failing_since: None,
            last_error: String::new(),
        };
        tokio::spawn(driver.run(rx));
        Ok(StreamWriter { id, epoch: v.stream.epoch, policy: v.stream.policy, layout, tx })
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
    async fn conn(&self, node: NodeId) -> Result<DataNodeClient, String> {
        let addr = self.addr(node).await.map_err(|e| e.to_string())?;
        match self.pool.get(&addr).await {
            Ok(c) => Ok(c),
            Err(e) => {
                self.nodes.lock().remove(&node);
                Err(format!("datanode {node} at {addr}: {e}"))
            }
        }
    }

    /// Reads a slice and checks it against its CRC32C. `replica:N`: from one replica,
    /// falling back to the next on an error or a mismatch (and reporting the bad copy).
    /// `ec:K+M`: from its data shards; when one is missing, slow or corrupt, from any K
    /// of the K+M shards, decoded. Never returns bytes that fail the CRC.
    pub async fn read(&self, s: Slice) -> Result<Bytes, StreamError> {
        self.located(s.extent, Want::Slice(s)).await
    }

    /// Bytes `[off, off + len)` of slice `s` (a ranged GET, a copied range). The
    /// datanodes check their stored CRCs over what they return; a part cannot be checked
    /// against the slice's own CRC (an EC part read that fails falls back to decoding the
    /// whole slice, which is).
    pub async fn read_part(&self, s: Slice, off: u64, len: u64) -> Result<Bytes, StreamError> {
        if off + len > s.len as u64 || len == 0 {
            let why = format!("bytes {off}+{len} are not inside the slice");
            return Err(StreamError::Unreadable { extent: s.extent, offset: s.offset, len: s.len, why });
        }
        if len == s.len as u64 {
            return self.read(s).await;
        }
        self.located(s.extent, Want::Part { s, off, len }).await
    }

    /// Reads `len` bytes of a `replica:N` extent from `offset`: any range of appended
    /// bytes, e.g. a whole extent. The datanode checks the CRCs it stored over what it
    /// returns; a replica that reports corruption is reported and the next one tried.
    /// Ranges longer than one read (`READ_BYTES_MAX`) are read piece by piece. An EC
    /// extent is read by slice (`read`, `read_part`).
    pub async fn read_range(&self, extent: ExtentId, offset: u64, len: u64) -> Result<Bytes, StreamError> {
        let mut out = bytes::BytesMut::with_capacity(len as usize);
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(READ_BYTES_MAX as u64) as u32;
            let piece = self.located(extent, Want::Range { offset: at, len: n }).await?;
            if len <= READ_BYTES_MAX as u64 {
                return Ok(piece);
            }
            out.extend_from_slice(&piece);
            at += n as u64;
        }
        Ok(out.freeze())
    }

    /// Reads through the cached locations of `extent`, and when that fails, through
    /// fresh ones from the metanode (replicas may have moved).
    async fn located(&self, extent: ExtentId, want: Want) -> Result<Bytes, StreamError> {
        let cached = self.extents.lock().get(&extent).cloned();
        if let Some(e) = cached {
            match self.read_in(&e, want).await {
                Ok(b) => return Ok(b),
                Err(err) => tracing::debug!("read from cached locations failed: {err}"),
            }
        }
        let e = self.meta.extent(extent).await?;
        self.extents.lock().insert(e.id, e.clone());
        self.read_in(&e, want).await
    }

    async fn read_in(&self, e: &ExtentInfo, want: Want) -> Result<Bytes, StreamError> {
        match (e.policy, want) {
            (Policy::Replica { .. }, Want::Slice(s)) => self.read_replicas(e, s.offset, s.len, Some(s.crc)).await,
            (Policy::Replica { .. }, Want::Part { s, off, len }) => {
                self.read_replicas(e, s.offset + off, len as u32, None).await
            }
            (Policy::Replica { .. }, Want::Range { offset, len }) => self.read_replicas(e, offset, len, None).await,
            (Policy::Ec { k, .. }, Want::Slice(s)) => self.read_stripe(e, k as usize, s).await,
            (Policy::Ec { k, .. }, Want::Part { s, off, len }) => {
                self.read_stripe_part(e, k as usize, s, off, len).await
            }
            (Policy::Ec { .. }, Want::Range { offset, len }) => Err(StreamError::Unreadable {
                extent: e.id,
                offset,
                len,
                why: format!("extent {} is {}: read it by slice", e.id, e.policy),
            }),
        }
    }

    /// Tries the replicas in turn, starting from one chosen by offset (spreading reads
    /// of one extent over its copies), copies known to be bad last.
    async fn read_replicas(
        &self,
        e: &ExtentInfo,
        offset: u64,
        len: u32,
        crc: Option<u32>,
    ) -> Result<Bytes, StreamError> {
        let n = e.replicas.len();
        let first = (offset / 4096 + e.id) as usize % n.max(1);
        let mut order: Vec<_> = (0..n).map(|i| e.replicas[(first + i) % n]).collect();
        order.sort_by_key(|r| e.bad.contains(&r.node));
        let mut why = Vec::new();
        for r in order {
            match self.read_copy(e.id, r.node, offset, len, crc).await {
                Ok(b) => return Ok(b),
                Err(w) => why.push(w),
            }
        }
        Err(StreamError::Unreadable { extent: e.id, offset, len, why: why.join("; ") })
    }

    /// Reads `len` bytes at `offset` of `node`'s copy (or shard) of `extent`. Bytes of
    /// the wrong length, that fail `crc`, or that the datanode found corrupt, are
    /// reported as a bad copy; every failure comes back as the reason.
    async fn read_copy(
        &self,
        extent: ExtentId,
        node: NodeId,
        offset: u64,
        len: u32,
        crc: Option<u32>,
    ) -> Result<Bytes, String> {
        let c = self.conn(node).await?;
        let t = self.config.replica_timeout;
        let Ok(read) = tokio::time::timeout(t, c.read(extent, offset, len)).await else {
            return Err(format!("datanode {node}: no answer within {t:?}"));
        };
        let bad = match read {
            Ok(b) if b.len() == len as usize && crc.is_none_or(|c| proto::crc32c(&b) == c) => return Ok(b),
            Ok(b) if b.len() != len as usize => format!("returned {} bytes for {len}", b.len()),
            Ok(_) => format!("bytes at {offset}+{len} do not match their CRC"),
            Err(err @ ClientError::Extent(ExtentError::ChecksumMismatch { .. })) => err.to_string(),
            Err(err) => return Err(format!("datanode {node}: {err}")),
        };
        tracing::warn!("extent {extent} on datanode {node}: {bad}");
        self.report_bad(extent, node, bad.clone());
        Err(format!("datanode {node}: {bad}"))
    }

    /// A whole EC slice. The data shards holding its bytes are read first; if one fails,
    /// or they are not all in within `ec_hedge`, the other shards are read too, and the
    /// slice is decoded from the first K that arrive (a slow shard is not waited for).
    /// Whatever comes back must match the slice's CRC: when the shards present do not
    /// give the right bytes together, each is left out in turn (one shard gone bad
    /// silently is found and reported). Fewer than K good shards is `Unreadable`.
    async fn read_stripe(&self, e: &ExtentInfo, k: usize, s: Slice) -> Result<Bytes, StreamError> {
        let n = e.replicas.len();
        let sl = shard_len(s.len as usize, k) as u64;
        // A short slice leaves the last data shards all padding: they are read only to decode.
        let holding = (s.len as u64).div_ceil(sl) as usize;
        let read = |i: usize| {
            let r = self.read_copy(e.id, e.replicas[i].node, s.offset, sl as u32, None);
            async move { (i, r.await) }
        };
        let mut pending: FuturesUnordered<_> = (0..holding).map(read).collect();
        let mut asked = holding;
        let hedge = tokio::time::sleep(self.config.ec_hedge);
        tokio::pin!(hedge);
        let mut shards: Vec<Option<Bytes>> = vec![None; n];
        let mut why = Vec::new();
        let mut tried_with = 0; // shards present at the last failed decode
        let mut tried_direct = false;
        let codec = self.codec(k, n - k)?;
        loop {
            let mut widen = false;
            tokio::select! {
                got = pending.next(), if !pending.is_empty() => {
                    let (i, r) = got.expect("not empty");
                    match r {
                        Ok(b) => shards[i] = Some(b),
                        Err(w) => {
                            why.push(format!("shard {i}: {w}"));
                            widen = true;
                        }
                    }
                }
                _ = &mut hedge, if asked < n => {
                    why.push(format!("data shards not all in within {:?}", self.config.ec_hedge));
                    widen = true;
                }
                else => {}
            }
            let present = shards.iter().flatten().count();
            // The data shards holding the bytes, all in (also after widening: a slow one
            // may arrive while others are dead): joined, no decoding needed.
            if !tried_direct && shards[..holding].iter().all(Option::is_some) {
                tried_direct = true;
                let joined = join_data(shards[..holding].iter().flatten(), s.len as usize);
                if proto::crc32c(&joined) == s.crc {
                    return Ok(joined);
                }
                why.push("the data shards do not match the slice's CRC".into());
                widen = true;
                tried_with = present;
            } else if asked > holding && present >= k && present > tried_with {
                match decode(codec.as_ref(), k, &shards, None, s) {
                    Ok(b) => return Ok(b),
                    Err(w) => why.push(w),
                }
                tried_with = present;
            }
            if widen && asked < n {
                pending.extend((asked..n).map(read));
                asked = n;
            }
            if pending.is_empty() && asked == n {
                break;
            }
        }
        // Every shard answered and no decode of all of them gave the slice: leave each
        // out in turn.
        let present: Vec<usize> = (0..n).filter(|&i| shards[i].is_some()).collect();
        if present.len() < k {
            why.push(format!("only {} good shards, {k} needed", present.len()));
        } else if present.len() > k {
            for &skip in &present {
                if let Ok(b) = decode(codec.as_ref(), k, &shards, Some(skip), s) {
                    let node = e.replicas[skip].node;
                    self.report_bad(e.id, node, format!("shard {skip} at {}+{sl} disagrees with the others", s.offset));
                    return Ok(b);
                }
            }
            why.push("no K of the shards read give bytes matching the slice's CRC".into());
        }
        Err(StreamError::Unreadable {
            extent: e.id,
            offset: s.offset,
            len: s.len,
            why: format!("ec:{k}+{}: {}", n - k, why.join("; ")),
        })
    }

    /// Part of an EC slice, from the data shards that hold it; the whole slice, decoded,
    /// when one of them fails.
    async fn read_stripe_part(
        &self,
        e: &ExtentInfo,
        k: usize,
        s: Slice,
        off: u64,
        len: u64,
    ) -> Result<Bytes, StreamError> {
        let sl = shard_len(s.len as usize, k) as u64;
        let reads = data_pieces(sl, off, len)
            .map(|(i, at, n)| self.read_copy(e.id, e.replicas[i].node, s.offset + at, n as u32, None));
        let got = match tokio::time::timeout(self.config.ec_hedge, crate::join_all(reads)).await {
            Ok(all) => all.into_iter().collect::<Result<Vec<Bytes>, String>>(),
            Err(_) => Err(format!("not all in within {:?}", self.config.ec_hedge)),
        };
        match got {
            Ok(pieces) => Ok(join_data(pieces.iter(), len as usize)),
            Err(why) => {
                tracing::debug!(
                    "extent {}: reading {off}+{len} of a slice from its data shards: {why}; decoding",
                    e.id
                );
                let whole = self.read_stripe(e, k, s).await?;
                Ok(whole.slice(off as usize..(off + len) as usize))
            }
        }
    }

    /// The decoder for `ec:k+m`, shared by every read of this client.
    fn codec(&self, k: usize, m: usize) -> Result<Arc<Simd>, StreamError> {
        let mut codecs = self.codecs.lock();
        if let Some(c) = codecs.get(&(k, m)) {
            return Ok(c.clone());
        }
        let policy = Policy::Ec { k: k as u8, m: m as u8 };
        let c = Arc::new(Simd::new(k, m).map_err(|_| StreamError::Unsupported(policy))?);
        codecs.insert((k, m), c.clone());
        Ok(c)
    }

    /// Tells the metanode, in the background, that `node`'s copy of `extent` is bad, and
    /// remembers it so later reads try that copy last.
    fn report_bad(&self, extent: ExtentId, node: NodeId, why: String) {
        if let Some(e) = self.extents.lock().get_mut(&extent) {
            if !e.bad.contains(&node) {
                e.bad.push(node);
            }
        }
        let meta = self.meta.clone();
        tokio::spawn(async move {
            if let Err(err) = meta.report_bad(extent, node, &why).await {
                tracing::warn!("could not report datanode {node}'s bad copy of extent {extent}: {err}");
            }
        });
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

    /// Deletes a stream and its extents' records (the datanodes' copies are GC's to reclaim).
    pub async fn delete_stream(&self, id: StreamId) -> Result<(), StreamError> {
        Ok(self.meta.delete_stream(id).await?)
    }
}

struct OpenExtent {
    info: ExtentInfo,
    conns: Vec<DataNodeClient>,
    /// Bytes every replica acknowledged: the length a failure seals at.
    len: u64,
    /// Bytes sent (acknowledged or in flight): the next append's offset.
    submitted: u64,
}

struct Tail {
    open: Option<OpenExtent>,
    /// The stream's last extent (sealed), which the next allocation follows.
    last: Option<ExtentId>,
}

/// Appends sent but not yet answered, per stream, at most.
pub const WRITER_IN_FLIGHT_MAX: usize = 64;
/// Bytes of appends sent but not yet answered, per stream, at most.
pub const WRITER_IN_FLIGHT_BYTES_MAX: usize = 64 << 20;

struct Req {
    /// Bytes appended (the slice's length).
    len: u32,
    payloads: Payloads,
    reply: oneshot::Sender<Result<Slice, StreamError>>,
}

/// What the writer's task is asked to do, in order.
enum Item {
    Append(Req),
    /// Seal the open extent once every earlier append is acknowledged; stop after if
    /// `close`.
    Seal {
        close: bool,
        reply: oneshot::Sender<Result<(), StreamError>>,
    },
}

impl Item {
    fn fail(self, e: StreamError) {
        match self {
            Item::Append(r) => drop(r.reply.send(Err(e))),
            Item::Seal { reply, .. } => drop(reply.send(Err(e))),
        }
    }
}

type Acks = Pin<Box<dyn Future<Output = Vec<Result<Result<Response, ClientError>, Elapsed>>> + Send>>;

struct InFlight {
    req: Req,
    extent: ExtentId,
    offset: u64,
    acks: Acks,
}

/// The one writer of a stream, under its epoch. Appends may be issued concurrently
/// (up to [`WRITER_IN_FLIGHT_MAX`] are on the wire at once); they land in the order
/// they were issued, and each is acknowledged once every replica has it durably.
pub struct StreamWriter {
    pub id: StreamId,
    pub epoch: Epoch,
    pub policy: Policy,
    layout: Layout,
    tx: mpsc::UnboundedSender<Item>,
}

impl StreamWriter {
    /// Queues `data` now (appends land in the order of these calls) and returns the
    /// future of its slice, ready once every replica made it durable. The queue is not
    /// bounded here: a caller bounds what it has outstanding (`WRITER_IN_FLIGHT_MAX`
    /// are on the wire at once). CRCs, and for `ec:K+M` the shards and their parity, are
    /// computed here, on the caller's thread.
    pub fn submit(&self, data: Bytes) -> impl Future<Output = Result<Slice, StreamError>> + Send + 'static {
        let (reply, rx) = oneshot::channel();
        let queued = if data.is_empty() || data.len() > APPEND_BYTES_MAX as usize {
            Err(StreamError::TooLarge(data.len()))
        } else {
            self.layout.payloads(&data).and_then(|payloads| {
                let req = Req { len: data.len() as u32, payloads, reply };
                self.tx.send(Item::Append(req)).map_err(|_| stopped())
            })
        };
        async move {
            queued?;
            rx.await.map_err(|_| stopped())?
        }
    }

    /// Appends `data` and returns where it is once every replica made it durable.
    pub async fn append(&self, data: Bytes) -> Result<Slice, StreamError> {
        self.submit(data).await
    }

    /// Seals the open extent once every append submitted before this call is
    /// acknowledged; the next append starts a new extent.
    pub async fn seal(&self) -> Result<(), StreamError> {
        self.control(false).await
    }

    /// Waits for every submitted append, seals the open extent (so a later writer need
    /// not fence it) and stops the writer.
    pub async fn close(self) -> Result<(), StreamError> {
        self.control(true).await
    }

    async fn control(&self, close: bool) -> Result<(), StreamError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Item::Seal { close, reply }).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> StreamError {
    StreamError::Unavailable { deadline: Duration::ZERO, last: "the writer stopped".into() }
}

fn fenced(e: &ClientError) -> bool {
    matches!(e, ClientError::Extent(ExtentError::StaleEpoch { .. }))
}

enum Next {
    Go,
    Stop,
}

/// The writer's task: owns the open extent, sends appends to every replica in order,
/// and on a failure seals at the acknowledged length, moves to a new extent and sends
/// every unacknowledged append again, in the same order.
struct Driver {
    client: StreamClient,
    id: StreamId,
    epoch: Epoch,
    tail: Tail,
    queue: VecDeque<Item>,
    inflight: VecDeque<InFlight>,
    inflight_bytes: usize,
    failing_since: Option<Instant>,
    last_error: String,
}

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Item>) {
        let mut closed = false;
        loop {
            match self.submit().await {
                Ok(Next::Go) => {}
                Ok(Next::Stop) => return,
                Err(e) => {
                    self.fail_all(e, &mut rx).await;
                    return;
                }
            }
            if closed && self.queue.is_empty() && self.inflight.is_empty() {
                return;
            }
            let room = self.queue.len() < WRITER_IN_FLIGHT_MAX;
            let waiting = !self.inflight.is_empty();
            tokio::select! {
                r = rx.recv(), if !closed && room => match r {
                    Some(req) => self.queue.push_back(req),
                    None => closed = true,
                },
                res = async { (&mut self.inflight.front_mut().expect("waiting").acks).await }, if waiting => {
                    if let Err(e) = self.settle(res).await {
                        self.fail_all(e, &mut rx).await;
                        return;
                    }
                }
                else => {
                    // Nothing on the wire and nothing can be received: an allocation is
                    // being retried; `submit` sleeps between attempts.
                }
            }
        }
    }

    /// Sends queued appends while the window allows, and carries out a seal once
    /// everything before it is acknowledged.
    async fn submit(&mut self) -> Result<Next, StreamError> {
        let cfg = self.client.config.clone();
        while let Some(front) = self.queue.front() {
            let len = match front {
                Item::Append(r) => r.payloads.advance(),
                Item::Seal { .. } if !self.inflight.is_empty() => return Ok(Next::Go),
                Item::Seal { .. } => {
                    self.seal_open().await?;
                    let Some(Item::Seal { close, reply }) = self.queue.pop_front() else { unreachable!() };
                    let _ = reply.send(Ok(()));
                    if close {
                        return Ok(Next::Stop);
                    }
                    continue;
                }
            };
            if self.inflight.len() >= WRITER_IN_FLIGHT_MAX || self.inflight_bytes >= WRITER_IN_FLIGHT_BYTES_MAX {
                return Ok(Next::Go);
            }
            if let Some(since) = self.failing_since {
                if since.elapsed() > cfg.append_deadline {
                    return Err(StreamError::Unavailable {
                        deadline: cfg.append_deadline,
                        last: std::mem::take(&mut self.last_error),
                    });
                }
            }
            if self.tail.open.as_ref().is_some_and(|o| o.submitted + len > cfg.extent_bytes_max) {
                if !self.inflight.is_empty() {
                    return Ok(Next::Go); // rotate once what is on the wire is answered
                }
                self.seal_open().await?;
            }
            if self.tail.open.is_none() {
                if let Err(why) = self.allocate().await? {
                    self.failed(why);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            let Some(Item::Append(req)) = self.queue.pop_front() else { unreachable!("an append is in front") };
            let o = self.tail.open.as_mut().expect("allocated");
            let (extent, offset) = (o.info.id, o.submitted);
            o.submitted += len;
            let sends: Vec<_> = o
                .conns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let (crc32c, payload) = req.payloads.target(i);
                    let r = Request::Append { extent, expected_offset: offset, epoch: self.epoch, crc32c, payload };
                    tokio::time::timeout(cfg.replica_timeout, c.submit(r))
                })
                .collect();
            self.inflight_bytes += req.payloads.bytes();
            self.inflight.push_back(InFlight { req, extent, offset, acks: Box::pin(crate::join_all(sends)) });
        }
        Ok(Next::Go)
    }

    fn failed(&mut self, why: String) {
        tracing::warn!("stream {}: {why}", self.id);
        self.failing_since.get_or_insert_with(Instant::now);
        self.last_error = why;
    }

    /// The oldest append's answers from every replica.
    async fn settle(&mut self, res: Vec<Result<Result<Response, ClientError>, Elapsed>>) -> Result<(), StreamError> {
        let f = self.inflight.pop_front().expect("settling the oldest");
        self.inflight_bytes -= f.req.payloads.bytes();
        let o = self.tail.open.as_ref().expect("in flight on the open extent");
        let mut failure = None;
        for (r, res) in o.info.replicas.iter().zip(res) {
            match res {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if fenced(&e) => {
                    // Answered with the error by `fail_all`, like everything after it.
                    self.queue.push_front(Item::Append(f.req));
                    return Err(StreamError::Fenced(e.to_string()));
                }
                Ok(Err(e)) => failure = Some(format!("datanode {}: {e}", r.node)),
                Err(_) => {
                    let t = self.client.config.replica_timeout;
                    failure = Some(format!("datanode {}: no answer within {t:?}", r.node))
                }
            }
        }
        match failure {
            None => {
                let o = self.tail.open.as_mut().expect("open");
                debug_assert_eq!(o.len, f.offset);
                o.len = f.offset + f.req.payloads.advance();
                self.failing_since = None;
                let slice = Slice { extent: f.extent, offset: f.offset, len: f.req.len, crc: f.req.payloads.crc() };
                let _ = f.req.reply.send(Ok(slice));
                Ok(())
            }
            Some(why) => {
                let extent = f.extent;
                self.failed(format!("extent {extent}: {why}; sealing it and sending again"));
                // This append and every later one go again, in order, to a new extent.
                let mut again: VecDeque<Item> = std::iter::once(Item::Append(f.req)).collect();
                again.extend(self.inflight.drain(..).map(|i| Item::Append(i.req)));
                self.inflight_bytes = 0;
                again.append(&mut self.queue);
                self.queue = again;
                self.seal_open().await
            }
        }
    }

    async fn fail_all(&mut self, e: StreamError, rx: &mut mpsc::UnboundedReceiver<Item>) {
        tracing::warn!("stream {} writer stopped: {e}", self.id);
        for item in self.inflight.drain(..).map(|i| Item::Append(i.req)).chain(self.queue.drain(..)) {
            item.fail(e.clone());
        }
        rx.close();
        while let Some(item) = rx.recv().await {
            item.fail(e.clone());
        }
    }

    /// Seals the open extent at the length every replica acknowledged: on the
    /// metanode (authoritative) and, best effort, on the replicas.
    async fn seal_open(&mut self) -> Result<(), StreamError> {
        let Some(o) = self.tail.open.take() else { return Ok(()) };
        for c in &o.conns {
            let _ = tokio::time::timeout(Duration::from_secs(1), c.seal(o.info.id, o.len)).await;
        }
        match self.client.meta.seal_extent(o.info.id, self.epoch, o.len).await {
            Ok(_) => {}
            Err(MetaError::Fenced { .. }) => return Err(StreamError::Fenced(format!("sealing extent {}", o.info.id))),
            Err(e) => return Err(e.into()),
        }
        self.tail.last = Some(o.info.id);
        Ok(())
    }

    /// Allocates the next extent and creates it on every replica. `Ok(Err(why))`: a
    /// replica could not create it (the extent is sealed empty; try again).
    async fn allocate(&mut self) -> Result<Result<(), String>, StreamError> {
        let info = match self.client.meta.allocate_extent(self.id, self.epoch, self.tail.last).await {
            Ok(i) => i,
            Err(MetaError::Fenced { .. }) => return Err(StreamError::Fenced("allocating".into())),
            Err(e @ MetaError::NotEnoughNodes { .. }) => return Ok(Err(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let mut conns = Vec::new();
        let mut failed = None;
        let timeout = self.client.config.replica_timeout;
        for r in &info.replicas {
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
        self.tail.open = Some(OpenExtent { info, conns, len: 0, submitted: 0 });
        if let Some(why) = failed {
            self.seal_open().await?;
            return Ok(Err(why));
        }
        Ok(Ok(()))
    }
}
