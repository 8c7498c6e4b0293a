//! Object bytes on LogStreams. A gateway owns a few streams (recorded in SQL under its
//! name, reopened with a new epoch at start); a body is cut into chunks that go to the
//! streams in turn, several in flight, so a large object is spread over the streams and
//! written in parallel while memory per request stays bounded. GETs read the slices in
//! order with a few reads ahead.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use client::{Slice, StreamClient, StreamError, StreamWriter};
use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use proto::meta::Policy;
use tokio::sync::mpsc;

use crate::meta::Meta;

/// Bytes per append (one slice).
pub const CHUNK_BYTES: usize = 4 << 20;
/// Chunks of one request on the wire at once: memory per PUT is at most this many
/// chunks (plus the one being filled).
pub const PUT_WINDOW: usize = 4;
/// Slices read ahead of the one being sent, per GET.
pub const GET_AHEAD: usize = 3;
/// Attempts of one chunk (a writer that stopped is reopened between attempts).
const CHUNK_ATTEMPTS: usize = 3;

struct Lane {
    stream: u64,
    writer: Mutex<Arc<StreamWriter>>,
}

pub struct Data {
    pub sc: StreamClient,
    owner: String,
    lanes: Vec<Lane>,
    next: AtomicUsize,
}

impl Data {
    /// Opens (creating as needed) `n` streams owned by `owner`.
    pub async fn open(sc: StreamClient, meta: &Meta, owner: &str, n: usize, policy: Policy) -> anyhow::Result<Data> {
        let mut ids = meta.streams_of(owner).await?;
        while ids.len() < n {
            let s = sc.create_stream(policy).await?;
            meta.add_stream(s.id, owner).await?;
            ids.push(s.id);
        }
        let mut lanes = Vec::new();
        for id in ids {
            let w = sc.open_writer(id, owner).await?;
            lanes.push(Lane { stream: id, writer: Mutex::new(Arc::new(w)) });
        }
        Ok(Data { sc, owner: owner.to_string(), lanes, next: AtomicUsize::new(0) })
    }

    /// Appends one chunk to lane `i`: queued on the lane's writer now (so appends of
    /// one request leave in order and at once), awaited later. A lane whose writer
    /// stopped is reopened and the chunk tried again.
    fn append(&self, i: usize, chunk: Bytes) -> impl std::future::Future<Output = Result<Slice, StreamError>> + '_ {
        let lane = &self.lanes[i % self.lanes.len()];
        let w = lane.writer.lock().clone();
        let first = w.submit(chunk.clone());
        async move {
            let mut last = match first.await {
                Ok(s) => return Ok(s),
                Err(e) => e,
            };
            let mut w = w;
            for _ in 1..CHUNK_ATTEMPTS {
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

    /// Writes a body: returns its slices in order and feeds every byte to `sink`
    /// (hashes) as it passes. At most `limit` bytes are taken (`TooLarge` beyond). The
    /// body keeps being read while up to `PUT_WINDOW` chunks are on their way.
    pub async fn put<S, E>(
        &self,
        mut body: S,
        limit: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(Vec<Slice>, u64), PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let base = self.next.fetch_add(1, Ordering::Relaxed);
        let mut inflight = futures::stream::FuturesOrdered::new();
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
                        Some(p) => {
                            total += p.len() as u64;
                            if total > limit {
                                return Err(PutError::TooLarge);
                            }
                            sink(&p);
                            buf.extend_from_slice(&p);
                        }
                        None => done = true,
                    }
                    while buf.len() >= CHUNK_BYTES || (done && !buf.is_empty()) {
                        let take = buf.len().min(CHUNK_BYTES);
                        let chunk = buf.split_to(take).freeze();
                        inflight.push_back(self.append(base + n, chunk));
                        n += 1;
                    }
                }
                s = inflight.next(), if !inflight.is_empty() => {
                    slices.push(s.expect("non-empty")?);
                }
            }
        }
        Ok((slices, total))
    }

    /// Slices holding the bytes `[start, end)` of an object made of `slices`, sharing
    /// every slice that lies wholly inside the range; the partial slices at its edges
    /// are read and appended anew (a slice's CRC covers the whole append, so it cannot
    /// be cut).
    pub async fn share_range(&self, slices: &[Slice], start: u64, end: u64) -> Result<Vec<Slice>, StreamError> {
        let mut out = Vec::new();
        let lane = self.next.fetch_add(1, Ordering::Relaxed);
        for (s, off, len) in pieces(slices, start, end) {
            if len == s.len as u64 {
                out.push(s);
            } else {
                let bytes = self.sc.read_range(s.extent, s.offset + off, len).await?;
                out.push(self.append(lane, bytes).await?);
            }
        }
        Ok(out)
    }

    /// The bytes `[start, end)` of an object made of `slices`, streamed in order with
    /// reads ahead.
    pub fn get(self: &Arc<Self>, slices: &[Slice], start: u64, end: u64) -> ByteStream {
        let pieces: Vec<_> = pieces(slices, start, end).collect();
        let (tx, rx) = mpsc::channel(1);
        let me = self.clone();
        tokio::spawn(async move {
            let reads = futures::stream::iter(pieces).map(|(s, off, len)| {
                let me = me.clone();
                async move {
                    if off == 0 && len == s.len as u64 {
                        me.sc.read(s).await
                    } else {
                        me.sc.read_range(s.extent, s.offset + off, len).await
                    }
                }
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
        ByteStream(rx)
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
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// Bytes arriving from a reader task.
pub struct ByteStream(mpsc::Receiver<io::Result<Bytes>>);

impl Stream for ByteStream {
    type Item = io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
