//! Object bytes on LogStreams. A gateway owns a few streams per redundancy policy
//! (recorded in SQL under its name, reopened with a new epoch at start; a policy's
//! streams are created the first time an object needs it); a body is cut into chunks
//! that go to the streams of its policy in turn, several in flight, so a large object is
//! spread over the streams and written in parallel while memory per request stays
//! bounded. GETs read the slices in order with a few reads ahead.
//!
//! A stream that cannot be opened at start (its last extent has too few reachable
//! copies to be sealed) does not stop the gateway: it serves with the streams that
//! opened, and `reopen_pending` keeps trying the others in the background, adding each
//! as a lane once it opens. A policy with none of its streams open gets new ones.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use client::{Slice, StreamClient, StreamError, StreamWriter};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use proto::meta::{Policy, StreamId};
use proto::ExtentId;
use tokio::sync::mpsc;

use crate::catalog::{Catalog, Layout};
use crate::limits::{
    CHUNK_ATTEMPTS, GET_AHEAD, OBJECT_CHUNK_BYTES, PUT_WINDOW, STREAM_OPEN_WAIT, STREAM_REOPEN_PERIOD,
};

struct Lane {
    stream: StreamId,
    writer: Mutex<Arc<StreamWriter>>,
}

/// The gateway's streams of one policy. A list is replaced, never changed, when a lane
/// is added; the lanes themselves are shared between lists, so that a writer reopened
/// through an older list is the one every later request uses.
type Lanes = Arc<Vec<Arc<Lane>>>;

pub struct Data {
    pub sc: StreamClient,
    catalog: Catalog,
    owner: String,
    /// Streams per policy; at least `width` each, counting `pending` ones.
    lanes: Mutex<HashMap<Policy, Lanes>>,
    /// This gateway's streams that could not be opened yet, by policy (`None`: the
    /// metanode could not say).
    pending: Mutex<Vec<(StreamId, Option<Policy>)>>,
    width: usize,
    /// Held while a policy's streams are being created.
    creating: tokio::sync::Mutex<()>,
    next: AtomicUsize,
    /// The floor of every write in flight (`pin`), by ticket.
    pinned: Mutex<BTreeMap<u64, ExtentId>>,
    tickets: AtomicU64,
}

/// Held by a write from before its first append until its row is committed (or the
/// write failed): keeps the extents it may name above the gateway's low-water mark.
pub struct Pinned<'a> {
    data: &'a Data,
    ticket: u64,
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        self.data.pinned.lock().remove(&self.ticket);
    }
}

impl Data {
    /// Opens every stream `owner` has (grouped by policy), creating `n` of `policy` if
    /// it has fewer; other policies get `n` streams when first asked for.
    pub async fn open(
        sc: StreamClient,
        catalog: &Catalog,
        owner: &str,
        n: usize,
        policy: Policy,
    ) -> anyhow::Result<Data> {
        let mut by_policy: HashMap<Policy, Vec<Arc<Lane>>> = HashMap::new();
        let ids = catalog.streams_of(owner).await?;
        let opens = ids.iter().map(|&id| {
            let sc = &sc;
            async move { tokio::time::timeout(STREAM_OPEN_WAIT, sc.open_writer(id, owner)).await }
        });
        let mut pending = Vec::new();
        for (&id, r) in ids.iter().zip(futures::future::join_all(opens).await) {
            match r {
                Ok(Ok(w)) => by_policy
                    .entry(w.policy)
                    .or_default()
                    .push(Arc::new(Lane { stream: id, writer: Mutex::new(Arc::new(w)) })),
                Ok(Err(e @ StreamError::Meta(proto::meta::MetaError::NoSuchStream { .. }))) => {
                    return Err(e)
                        .with_context(|| format!("stream {id}, recorded as this gateway's, is not on the metanode"));
                }
                r => {
                    let why = match r {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {STREAM_OPEN_WAIT:?}"),
                    };
                    let policy = sc.meta.stream(id).await.ok().map(|v| v.stream.policy);
                    tracing::warn!(
                        "stream {id}: cannot be opened now ({why}); serving without it, retrying in the background"
                    );
                    pending.push((id, policy));
                }
            }
        }
        let lanes = by_policy.into_iter().map(|(p, l)| (p, Arc::new(l))).collect();
        let d = Data {
            sc,
            catalog: catalog.clone(),
            owner: owner.to_string(),
            lanes: Mutex::new(lanes),
            pending: Mutex::new(pending),
            width: n.max(1),
            creating: Default::default(),
            next: AtomicUsize::new(0),
            pinned: Default::default(),
            tickets: AtomicU64::new(0),
        };
        d.lanes(policy).await?;
        Ok(d)
    }

    /// The lowest extent any append submitted from now on can land in, over every
    /// lane's writer (`client::floor_of`); 0 when no lane has an extent yet (then
    /// nothing of this gateway is collected).
    fn floor(&self) -> ExtentId {
        let writers: Vec<Arc<StreamWriter>> =
            self.lanes.lock().values().flat_map(|l| l.iter()).map(|l| l.writer.lock().clone()).collect();
        client::floor_of(writers.iter().map(|w| w.as_ref()))
    }

    /// Pins the extents a write may name, from now until the guard is dropped: take it
    /// before the write's first append and keep it until its row is committed.
    pub fn pin(&self) -> Pinned<'_> {
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let floor = self.floor();
        self.pinned.lock().insert(ticket, floor);
        Pinned { data: self, ticket }
    }

    /// This gateway's low-water mark: every write in flight, and every write started
    /// later, names only extents at or above it (GC collects nothing at or above it).
    /// Extent ids only grow, so a mark published earlier stays a safe (lower) bound.
    pub fn low_water(&self) -> ExtentId {
        // The floor first: a write pinned after it was read appends after it too, so
        // lands at or above it; read the other way, a pin could be missed.
        let now = self.floor();
        let pinned = self.pinned.lock().values().min().copied();
        pinned.map_or(now, |p| p.min(now))
    }

    /// Publishes `low_water` in the catalog every `period`, for the life of the process.
    pub async fn publish_low_water(self: Arc<Self>, period: std::time::Duration) {
        let mut last = None;
        loop {
            let low = self.low_water();
            if last != Some(low) {
                match self.catalog.set_low_water(&self.owner, low).await {
                    Ok(()) => last = Some(low),
                    Err(e) => tracing::warn!("publishing the low-water mark: {e}"),
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    /// Streams of this gateway that could not be opened yet.
    pub fn pending(&self) -> Vec<StreamId> {
        self.pending.lock().iter().map(|p| p.0).collect()
    }

    /// Tries the streams that could not be opened until each opens, for the life of the
    /// process (every `STREAM_REOPEN_PERIOD`), and adds each as a lane of its policy.
    pub async fn reopen_pending(self: Arc<Self>) {
        loop {
            let todo = self.pending.lock().clone();
            if todo.is_empty() {
                return;
            }
            tokio::time::sleep(STREAM_REOPEN_PERIOD).await;
            for (id, _) in todo {
                let w = match tokio::time::timeout(STREAM_OPEN_WAIT, self.sc.open_writer(id, &self.owner)).await {
                    Ok(Ok(w)) => w,
                    Ok(Err(e)) => {
                        tracing::debug!("stream {id}: still cannot be opened: {e}");
                        continue;
                    }
                    Err(_) => continue,
                };
                let policy = w.policy;
                let _turn = self.creating.lock().await;
                let mut lanes = self.lanes.lock();
                let mut now: Vec<Arc<Lane>> = lanes.get(&policy).map_or_else(Vec::new, |old| old.to_vec());
                now.push(Arc::new(Lane { stream: id, writer: Mutex::new(Arc::new(w)) }));
                lanes.insert(policy, Arc::new(now));
                self.pending.lock().retain(|p| p.0 != id);
                tracing::info!("stream {id}: opened; a lane of {policy} again");
            }
        }
    }

    /// The streams of `policy`, created (`width` of them) the first time. Streams of
    /// the policy waiting to be reopened count towards `width` while at least one of
    /// its streams is open.
    async fn lanes(&self, policy: Policy) -> Result<Lanes, StreamError> {
        let have = |d: &Data| {
            let waiting = d.pending.lock().iter().filter(|p| p.1 == Some(policy)).count();
            d.lanes.lock().get(&policy).filter(|l| !l.is_empty() && l.len() + waiting >= d.width).cloned()
        };
        if let Some(l) = have(self) {
            return Ok(l);
        }
        let _turn = self.creating.lock().await;
        if let Some(l) = have(self) {
            return Ok(l);
        }
        // Fewer than `width` (the gateway was restarted with more): keep them, add more.
        let mut lanes: Vec<Arc<Lane>> = self.lanes.lock().get(&policy).map_or_else(Vec::new, |old| old.to_vec());
        while lanes.len() < self.width {
            let s = self.sc.create_stream(policy).await?;
            self.catalog.add_stream(s.id, &self.owner).await.map_err(|e| StreamError::Unavailable {
                deadline: std::time::Duration::ZERO,
                last: format!("recording stream {}: {e}", s.id),
            })?;
            let w = self.sc.open_writer(s.id, &self.owner).await?;
            lanes.push(Arc::new(Lane { stream: s.id, writer: Mutex::new(Arc::new(w)) }));
        }
        let lanes = Arc::new(lanes);
        self.lanes.lock().insert(policy, lanes.clone());
        Ok(lanes)
    }

    /// Appends one chunk to lane `i`: queued on the lane's writer now (so appends of
    /// one request leave in order and at once), awaited later. A lane whose writer
    /// stopped is reopened and the chunk tried again; not for `NoSpace`, which leaves
    /// the writer running.
    fn append(
        &self,
        lanes: &Lanes,
        i: usize,
        chunk: Bytes,
    ) -> impl std::future::Future<Output = Result<Slice, StreamError>> + '_ {
        let lanes = lanes.clone();
        let lane_ix = i % lanes.len();
        let w = lanes[lane_ix].writer.lock().clone();
        let first = w.submit(chunk.clone());
        async move {
            let lane = &lanes[lane_ix];
            let mut last = match first.await {
                Ok(s) => return Ok(s),
                // The writer is fine and a new one would find no more room.
                Err(e @ StreamError::NoSpace(_)) => return Err(e),
                Err(e) => e,
            };
            let mut w = w;
            for _ in 1..CHUNK_ATTEMPTS {
                if matches!(last, StreamError::NoSpace(_)) {
                    break;
                }
                tracing::warn!("stream {}: append failed ({last}); reopening the writer", lane.stream);
                let fresh = Arc::new(self.sc.open_writer(lane.stream, &self.owner).await?);
                {
                    let mut cur = lane.writer.lock();
                    if Arc::ptr_eq(&cur, &w) {
                        *cur = fresh;
                    }
                    w = cur.clone();
                }
                match w.append(chunk.clone()).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }

    /// Writes a body with `policy`: returns its slices in order. At most `limit` bytes
    /// are taken (`TooLarge` beyond); `expect` is the body's length if known (each
    /// chunk's buffer is allocated once, at the size it will have, instead of growing).
    /// The body keeps being read while up to `PUT_WINDOW` chunks are on their way.
    pub async fn put<S, E>(
        &self,
        policy: Policy,
        mut body: S,
        limit: u64,
        expect: Option<u64>,
    ) -> Result<(Vec<Slice>, u64), PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let lanes = self.lanes(policy).await?;
        let base = self.next.fetch_add(1, Ordering::Relaxed);
        let mut inflight = futures::stream::FuturesOrdered::new();
        // A chunk's buffer goes back to `SPARE_CHUNKS` once its append is done.
        let send = |chunk: Bytes, n: usize| {
            let append = self.append(&lanes, base + n, chunk.clone());
            async move {
                let r = append.await;
                spare(chunk);
                r
            }
        };
        let mut slices = Vec::new();
        let mut buf = BytesMut::new();
        let mut total = 0u64;
        let mut n = 0usize;
        let mut done = false;
        while !done || !inflight.is_empty() {
            tokio::select! {
                piece = body.next(), if !done && inflight.len() < PUT_WINDOW => {
                    let piece = piece.transpose().map_err(|e| PutError::Body(e.to_string()))?;
                    match piece {
                        Some(mut p) => {
                            if total + p.len() as u64 > limit {
                                return Err(PutError::TooLarge);
                            }
                            while !p.is_empty() {
                                if buf.capacity() == 0 {
                                    // What is left of the body, up to a chunk.
                                    let left = expect.map_or(u64::MAX, |e| e.saturating_sub(total)).max(1);
                                    buf = chunk_buffer(left.min(OBJECT_CHUNK_BYTES as u64) as usize);
                                }
                                let take = p.len().min(OBJECT_CHUNK_BYTES - buf.len());
                                buf.extend_from_slice(&p.split_to(take));
                                total += take as u64;
                                if buf.len() == OBJECT_CHUNK_BYTES {
                                    let chunk = std::mem::take(&mut buf).freeze();
                                    inflight.push_back(send(chunk, n));
                                    n += 1;
                                }
                            }
                        }
                        None => {
                            done = true;
                            if !buf.is_empty() {
                                let chunk = std::mem::take(&mut buf).freeze();
                                inflight.push_back(send(chunk, n));
                                n += 1;
                            }
                        }
                    }
                }
                s = inflight.next(), if !inflight.is_empty() => {
                    slices.push(s.expect("non-empty")?);
                }
            }
        }
        Ok((slices, total))
    }

    /// Writes a whole object's body: kept as it is, for the object's row, when its
    /// length is known and at most `keep_max` bytes (not empty: an empty object has no
    /// slices), and then it must be exactly that long (`Length`); else as `put` writes
    /// it (the caller compares the length it returns).
    pub async fn put_object<S, E>(
        &self,
        policy: Policy,
        mut body: S,
        limit: u64,
        expect: Option<u64>,
        keep_max: u64,
    ) -> Result<(Layout, u64), PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let Some(n) = expect.filter(|&n| n > 0 && n <= keep_max.min(limit)) else {
            let (slices, total) = self.put(policy, body, limit, expect).await?;
            return Ok((Layout::Slices(slices), total));
        };
        let mut buf = BytesMut::with_capacity(n as usize);
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| PutError::Body(e.to_string()))?;
            // Longer than said: refused as soon as it shows, without holding more.
            if (buf.len() + piece.len()) as u64 > n {
                return Err(PutError::Length);
            }
            buf.extend_from_slice(&piece);
        }
        if buf.len() as u64 != n {
            return Err(PutError::Length);
        }
        Ok((Layout::Inline(buf.freeze()), n))
    }

    /// Slices holding the bytes `[start, end)` of an object laid out as `layout`,
    /// sharing every slice that lies wholly inside the range; the partial slices at its
    /// edges are read and appended anew with `policy` (a slice's CRC covers the whole
    /// append, so it cannot be cut), as are bytes kept in the object's row.
    pub async fn share_range(
        &self,
        policy: Policy,
        layout: &Layout,
        start: u64,
        end: u64,
    ) -> Result<Vec<Slice>, StreamError> {
        let mut out = Vec::new();
        let lanes = self.lanes(policy).await?;
        let lane = self.next.fetch_add(1, Ordering::Relaxed);
        let slices = match layout {
            Layout::Slices(s) => s,
            // As long as its object (`catalog::sized_layout`), so the range is in it.
            Layout::Inline(b) => {
                if start < end {
                    out.push(self.append(&lanes, lane, b.slice(start as usize..end as usize)).await?);
                }
                return Ok(out);
            }
        };
        for (s, off, len) in pieces(slices, start, end) {
            if len == s.len as u64 {
                out.push(s);
            } else {
                let bytes = self.sc.read_part(s, off, len).await?;
                out.push(self.append(&lanes, lane, bytes).await?);
            }
        }
        Ok(out)
    }

    /// The bytes `[start, end)` of an object laid out as `layout`, streamed in order
    /// with reads ahead (or, kept in its row, as they are).
    pub fn get(self: &Arc<Self>, layout: &Layout, start: u64, end: u64) -> ByteStream {
        let (tx, rx) = mpsc::channel(1);
        let slices = match layout {
            Layout::Slices(s) => s,
            Layout::Inline(b) => {
                let mut first = None;
                if end as usize > b.len() {
                    let e = format!("the row keeps {} bytes; bytes up to {end} were asked for", b.len());
                    tx.try_send(Err(io::Error::other(e))).expect("an empty channel");
                } else if start < end {
                    first = Some(b.slice(start as usize..end as usize));
                }
                return ByteStream { first, rx };
            }
        };
        let pieces: Vec<_> = pieces(slices, start, end).collect();
        let me = self.clone();
        tokio::spawn(async move {
            let reads = futures::stream::iter(pieces).map(|(s, off, len)| {
                let me = me.clone();
                async move { me.sc.read_part(s, off, len).await }
            });
            let mut reads = reads.buffered(GET_AHEAD);
            while let Some(r) = reads.next().await {
                let item = r.map_err(|e| io::Error::other(e.to_string()));
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        ByteStream { first: None, rx }
    }

    /// As `get`, but waits for the first piece: an object whose first bytes cannot be
    /// read fails before any response header is sent (a clear S3 error instead of a
    /// body cut short).
    pub async fn get_started(self: &Arc<Self>, layout: &Layout, start: u64, end: u64) -> io::Result<ByteStream> {
        let mut s = self.get(layout, start, end);
        if s.first.is_none() {
            s.first = s.rx.recv().await.transpose()?;
        }
        Ok(s)
    }
}

/// Buffers of whole chunks whose appends are done, for the next chunks of any PUT: a
/// fresh 4 MiB buffer costs a page fault for each of its pages (with the copy into it,
/// a tenth of the server's CPU in a profile of 64 MiB PUTs). At most
/// `SPARE_CHUNKS_MAX` are kept.
static SPARE_CHUNKS: Mutex<Vec<BytesMut>> = Mutex::new(Vec::new());
const SPARE_CHUNKS_MAX: usize = 16;

/// An empty buffer for a chunk of `len` bytes: a spare one for a whole chunk.
fn chunk_buffer(len: usize) -> BytesMut {
    if len == OBJECT_CHUNK_BYTES {
        if let Some(b) = SPARE_CHUNKS.lock().pop() {
            return b;
        }
    }
    BytesMut::with_capacity(len)
}

/// Keeps the buffer of a whole chunk whose append is done, if nothing else holds it.
fn spare(chunk: Bytes) {
    if chunk.len() != OBJECT_CHUNK_BYTES {
        return;
    }
    if let Ok(mut b) = chunk.try_into_mut() {
        b.clear();
        let mut spare = SPARE_CHUNKS.lock();
        if b.capacity() >= OBJECT_CHUNK_BYTES && spare.len() < SPARE_CHUNKS_MAX {
            spare.push(b);
        }
    }
}

/// The parts of `slices` (an object's bytes in order) that hold `[start, end)`: each
/// slice with the offset and length of the bytes wanted from it.
fn pieces(slices: &[Slice], start: u64, end: u64) -> impl Iterator<Item = (Slice, u64, u64)> + '_ {
    slices
        .iter()
        .scan(0u64, |at, s| {
            let a = *at;
            *at += s.len as u64;
            Some((*s, a, *at))
        })
        .filter(move |&(_, a, b)| b > start && a < end)
        .map(move |(s, a, b)| (s, start.max(a) - a, end.min(b) - start.max(a)))
}

#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("reading the request body: {0}")]
    Body(String),
    #[error("body larger than allowed")]
    TooLarge,
    /// A body kept whole was not as long as it said.
    #[error("the body is shorter or longer than its stated length")]
    Length,
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Bytes arriving from a reader task (after `first`, when it was taken early).
pub struct ByteStream {
    first: Option<Bytes>,
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl Stream for ByteStream {
    type Item = io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(b) = self.first.take() {
            return Poll::Ready(Some(Ok(b)));
        }
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole chunk's buffer is used again once nothing else holds it, never while a
    /// reader still holds the bytes; partial chunks are not kept, nor more than the cap.
    #[test]
    fn chunk_buffers_are_reused_only_when_unshared() {
        let whole = |fill: u8| {
            let mut b = chunk_buffer(OBJECT_CHUNK_BYTES);
            b.resize(OBJECT_CHUNK_BYTES, fill);
            b.freeze()
        };
        SPARE_CHUNKS.lock().clear();
        let held = whole(7);
        let reader = held.clone();
        spare(held);
        assert!(SPARE_CHUNKS.lock().is_empty(), "a buffer still read was kept");
        let mut next = chunk_buffer(OBJECT_CHUNK_BYTES);
        next.resize(OBJECT_CHUNK_BYTES, 9);
        assert!(reader.iter().all(|&b| b == 7), "the reader's bytes changed");

        let alone = whole(1);
        let at = alone.as_ptr();
        spare(alone);
        let again = chunk_buffer(OBJECT_CHUNK_BYTES);
        assert_eq!(again.as_ptr(), at, "the spare buffer was not used again");
        assert!(again.is_empty() && again.capacity() >= OBJECT_CHUNK_BYTES);

        spare(Bytes::from(vec![0u8; 4096]));
        assert!(SPARE_CHUNKS.lock().is_empty(), "a partial chunk was kept");
        let many: Vec<Bytes> = (0..SPARE_CHUNKS_MAX + 3).map(|_| whole(2)).collect();
        for b in many {
            spare(b);
        }
        assert_eq!(SPARE_CHUNKS.lock().len(), SPARE_CHUNKS_MAX);
        SPARE_CHUNKS.lock().clear();
    }
}
