//! Writing LogStreams: `StreamWriter`, the handle callers submit appends to, and its
//! `Driver`, the task that owns the stream's open extent, fans appends out to every
//! replica (or shard) in order, acknowledges them once all have them durably, rotates
//! extents, and on a failure seals, allocates the next extent and sends again.
//!
//! A full cluster fails appends fast instead: when the metanode finds no room, or
//! datanodes refuse appends for lack of space and a few more extents do not help, the
//! waiting appends fail with `StreamError::NoSpace` at once, and the writer stays up
//! for the next appends (space comes back when GC reclaims deleted data).
//!
//! The writer publishes its `floor`, the smallest extent id a new append can land in
//! (GC deletes nothing at or above it), and seals its open extent once idle for
//! `StreamConfig::idle_seal`, so that the dead bytes of a quiet stream's tail become
//! collectable.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::meta::{ExtentInfo, MetaError, Policy, StreamId};
use proto::{Epoch, ExtentError, ExtentId, Request, Response, APPEND_BYTES_MAX};
use tokio::sync::{mpsc, oneshot};

use super::{within, ReplicaFailure, Slice, StreamClient, StreamError};
use crate::limits::{NOSPACE_ALLOCATIONS_MAX, WRITER_IN_FLIGHT_BYTES_MAX, WRITER_IN_FLIGHT_MAX};
use crate::stripe::{Layout, Payloads};
use crate::{ClientError, DataNodeClient};

/// Where a writer's next append can land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floor {
    /// In this open extent, or a later one.
    Open(ExtentId),
    /// No extent is open: in a new one, whose id is above every extent that exists
    /// when it is allocated, so at least this (the last sealed one's + 1).
    Idle(ExtentId),
    /// The stream has no extent yet: in a new one, above every extent that exists.
    Empty,
}

impl Floor {
    /// One word, so it is read whole: the id shifted left, the low bit set when idle.
    fn encode(self) -> u64 {
        match self {
            Floor::Open(e) => e.0 << 1,
            Floor::Idle(e) => (e.0 << 1) | 1,
            Floor::Empty => 0,
        }
    }

    fn decode(v: u64) -> Floor {
        match (v >> 1, v & 1) {
            (0, _) => Floor::Empty,
            (id, 0) => Floor::Open(ExtentId(id)),
            (id, _) => Floor::Idle(ExtentId(id)),
        }
    }
}

/// The lowest extent any append submitted to `writers` after this call can land in,
/// 0 when none has an extent (then nothing is safe to collect). An open writer appends
/// at or above its open extent; an idle or empty one into a new extent, allocated after
/// this call, so above every extent that exists now, which includes every idle
/// writer's last one: the largest idle floor bounds them all, and a quiet writer does
/// not hold back what the others wrote since.
pub fn floor_of<'a>(writers: impl IntoIterator<Item = &'a StreamWriter>) -> ExtentId {
    combine(writers.into_iter().map(StreamWriter::floor_state))
}

fn combine(states: impl IntoIterator<Item = Floor>) -> ExtentId {
    let (mut open, mut idle) = (None::<ExtentId>, None::<ExtentId>);
    for f in states {
        match f {
            Floor::Open(e) => open = Some(open.map_or(e, |o| o.min(e))),
            Floor::Idle(e) => idle = Some(idle.map_or(e, |i| i.max(e))),
            Floor::Empty => {}
        }
    }
    match (open, idle) {
        (Some(o), Some(i)) => o.min(i),
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => ExtentId(0),
    }
}

impl StreamClient {
    /// Opens `id` for writing under a new epoch (the previous writer is fenced and its
    /// open extent sealed by the metanode).
    pub async fn open_writer(&self, id: StreamId, writer: &str) -> Result<StreamWriter, StreamError> {
        let v = self.meta.open_stream(id, writer).await?;
        let layout = Layout::new(v.stream.policy)?;
        self.remember(&v.nodes);
        let last = v.stream.tail;
        let tail = Tail { open: None, last };
        // The open sealed the last extent: new appends go to a later one.
        let floor = Arc::new(AtomicU64::new(last.map_or(0, |e| Floor::Idle(e.next()).encode())));
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
            last_setback: None,
            full: None,
            floor: floor.clone(),
            last_activity: Instant::now(),
        };
        tokio::spawn(driver.run(rx));
        Ok(StreamWriter { id, epoch: v.stream.epoch, policy: v.stream.policy, layout, tx, floor })
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

/// Every replica's answer to one append, in replica order.
type Acks = Pin<Box<dyn Future<Output = Vec<Result<Response, ReplicaFailure>>> + Send>>;

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
    /// See [`StreamWriter::floor`]; raised by the driver, never lowered.
    floor: Arc<AtomicU64>,
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

    /// The smallest extent id that an append submitted after this call can land in:
    /// the open extent's, else the last sealed extent's + 1 (ids only grow), else 0 for
    /// a stream without extents. It never decreases. GC deletes no extent at or above
    /// the floor of the live writers (`floor_of`), so bytes being written are never
    /// taken for dead ones.
    pub fn floor(&self) -> ExtentId {
        match self.floor_state() {
            Floor::Open(e) | Floor::Idle(e) => e,
            Floor::Empty => ExtentId(0),
        }
    }

    /// The floor, and whether an extent is open (see `Floor`).
    pub fn floor_state(&self) -> Floor {
        Floor::decode(self.floor.load(Ordering::Acquire))
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

enum Next {
    Go,
    Stop,
}

/// What `allocate` came to when the writer can go on.
enum Allocation {
    /// The next extent is open on every replica.
    Open,
    /// No extent for now; the writer pauses (`allocate_pause`) and asks again.
    Retry(Setback),
    /// The metanode found no room for a new extent: the waiting appends fail now.
    NoSpace(MetaError),
}

/// Datanodes refused an append or a create for lack of space, and no append was
/// acknowledged since: what they said, and how many extents were allocated since (the
/// metanode's view of free space is a heartbeat old, so it may pick a device that just
/// filled). The count restarts for each batch of appends that fails.
struct Full {
    why: String,
    allocations: u32,
}

/// Why the writer could not place appends for now. It keeps trying until
/// `append_deadline` has passed since the first setback; the last one is what
/// `StreamError::Unavailable` reports.
#[derive(Debug, thiserror::Error)]
enum Setback {
    /// The metanode found too few datanodes for the policy.
    #[error(transparent)]
    NoPlacement(MetaError),
    /// A replica could not create the new extent.
    #[error("creating extent {extent}: {failure}")]
    Create { extent: ExtentId, failure: ReplicaFailure },
    /// A replica failed an append: the extent is sealed and the appends go again.
    #[error("extent {extent}: {failure}; sealing it and sending again")]
    Append { extent: ExtentId, failure: ReplicaFailure },
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
    last_setback: Option<Setback>,
    /// Set by a datanode's `NoSpace`, cleared by the next acknowledged append.
    full: Option<Full>,
    floor: Arc<AtomicU64>,
    /// When an append was last queued or answered: idle sealing counts from here.
    last_activity: Instant,
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
            let idle = self.idle_seal_at();
            tokio::select! {
                r = rx.recv(), if !closed && room => match r {
                    Some(req) => {
                        self.last_activity = Instant::now();
                        self.queue.push_back(req);
                    }
                    None => closed = true,
                },
                res = async { (&mut self.inflight.front_mut().expect("waiting").acks).await }, if waiting => {
                    self.last_activity = Instant::now();
                    if let Err(e) = self.settle(res).await {
                        self.fail_all(e, &mut rx).await;
                        return;
                    }
                }
                _ = tokio::time::sleep_until(idle.unwrap_or_else(Instant::now).into()), if idle.is_some() => {
                    tracing::debug!("stream {}: sealing the idle open extent", self.id);
                    if let Err(e) = self.seal_open().await {
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

    /// When to seal the open extent for idleness: `idle_seal` after the last activity,
    /// if it holds acknowledged bytes and nothing is queued or in flight.
    fn idle_seal_at(&self) -> Option<Instant> {
        let after = self.client.config.idle_seal?;
        let idle = self.queue.is_empty() && self.inflight.is_empty();
        let holds_bytes = self.tail.open.as_ref().is_some_and(|o| o.len > 0);
        (idle && holds_bytes).then(|| self.last_activity + after)
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
                        last: self.last_setback.take().map(|s| s.to_string()).unwrap_or_default(),
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
                if let Some(f) = self.full.as_mut().filter(|f| f.allocations >= NOSPACE_ALLOCATIONS_MAX) {
                    // The next appends may allocate as many; the first of them goes
                    // straight to a new extent, so each failed append costs at most this.
                    f.allocations = 0;
                    let why = f.why.clone();
                    self.fail_waiting(&why);
                    continue;
                }
                match self.allocate().await? {
                    Allocation::Open => {}
                    Allocation::Retry(why) => {
                        self.failed(why);
                        tokio::time::sleep(cfg.allocate_pause).await;
                        continue;
                    }
                    Allocation::NoSpace(e) => {
                        self.full = None;
                        self.fail_waiting(&e.to_string());
                        continue;
                    }
                }
            }
            let Some(Item::Append(req)) = self.queue.pop_front() else { unreachable!("an append is in front") };
            let o = self.tail.open.as_mut().expect("allocated");
            let (extent, offset) = (o.info.id, o.submitted);
            o.submitted += len;
            let sends: Vec<_> = o
                .info
                .replicas
                .iter()
                .zip(&o.conns)
                .enumerate()
                .map(|(i, (r, c))| {
                    let (crc32c, payload) = req.payloads.target(i);
                    let a = Request::Append { extent, expected_offset: offset, epoch: self.epoch, crc32c, payload };
                    within(r.node, cfg.replica_timeout, c.submit(a))
                })
                .collect();
            self.inflight_bytes += req.payloads.bytes();
            self.inflight.push_back(InFlight { req, extent, offset, acks: Box::pin(crate::join_all(sends)) });
        }
        Ok(Next::Go)
    }

    /// Fails every queued append with `NoSpace` (a seal waiting behind them still runs).
    /// The writer goes on: the next appends are tried again, as space may come back.
    fn fail_waiting(&mut self, why: &str) {
        tracing::warn!("stream {}: the cluster is out of space: {why}", self.id);
        debug_assert!(self.inflight.is_empty(), "no extent is open");
        let (appends, rest): (VecDeque<Item>, VecDeque<Item>) =
            self.queue.drain(..).partition(|i| matches!(i, Item::Append(_)));
        self.queue = rest;
        for item in appends {
            item.fail(StreamError::NoSpace(why.to_string()));
        }
        self.failing_since = None;
        self.last_setback = None;
    }

    /// Notes a datanode's refusal for lack of space (the first since the last
    /// acknowledged append counts).
    fn note_full(&mut self, failure: &ReplicaFailure) {
        if is_no_space(failure) && self.full.is_none() {
            self.full = Some(Full { why: failure.to_string(), allocations: 0 });
        }
    }

    fn failed(&mut self, why: Setback) {
        tracing::warn!("stream {}: {why}", self.id);
        self.failing_since.get_or_insert_with(Instant::now);
        self.last_setback = Some(why);
    }

    /// The oldest append's answers from every replica.
    async fn settle(&mut self, res: Vec<Result<Response, ReplicaFailure>>) -> Result<(), StreamError> {
        let f = self.inflight.pop_front().expect("settling the oldest");
        self.inflight_bytes -= f.req.payloads.bytes();
        let mut failure = None;
        for res in res {
            match res {
                Ok(_) => {}
                Err(ReplicaFailure::Refused {
                    error: e @ ClientError::Extent(ExtentError::StaleEpoch { .. }), ..
                }) => {
                    // Answered with the error by `fail_all`, like everything after it.
                    self.queue.push_front(Item::Append(f.req));
                    return Err(StreamError::Fenced(e.to_string()));
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            None => {
                let o = self.tail.open.as_mut().expect("open");
                debug_assert_eq!(o.len, f.offset);
                o.len = f.offset + f.req.payloads.advance();
                self.failing_since = None;
                self.full = None;
                let slice = Slice { extent: f.extent, offset: f.offset, len: f.req.len, crc: f.req.payloads.crc() };
                let _ = f.req.reply.send(Ok(slice));
                Ok(())
            }
            Some(failure) => {
                self.note_full(&failure);
                self.failed(Setback::Append { extent: f.extent, failure });
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
            let _ = tokio::time::timeout(self.client.config.seal_timeout, c.seal(o.info.id, o.len)).await;
        }
        match self.client.meta.seal_extent(o.info.id, self.epoch, o.len).await {
            Ok(_) => {}
            Err(MetaError::Fenced { .. }) => return Err(StreamError::Fenced(format!("sealing extent {}", o.info.id))),
            Err(e) => return Err(e.into()),
        }
        self.tail.last = Some(o.info.id);
        // Only this task stores it; the id part only grows.
        self.floor.store(Floor::Idle(o.info.id.next()).encode(), Ordering::Release);
        Ok(())
    }

    /// Allocates the next extent and creates it on every replica. When that fails for
    /// now (no placement, or a replica could not create it: the extent is then sealed
    /// empty), says why, and the writer tries again.
    async fn allocate(&mut self) -> Result<Allocation, StreamError> {
        let info = match self.client.meta.allocate_extent(self.id, self.epoch, self.tail.last).await {
            Ok(i) => i,
            Err(MetaError::Fenced { .. }) => return Err(StreamError::Fenced("allocating".into())),
            // Too few nodes, or a chosen node went down between placement and commit
            // (`Unavailable`): both pass; the append deadline bounds the retries.
            Err(e @ (MetaError::NotEnoughNodes { .. } | MetaError::Unavailable { .. })) => {
                return Ok(Allocation::Retry(Setback::NoPlacement(e)))
            }
            Err(e @ MetaError::NoSpace { .. }) => return Ok(Allocation::NoSpace(e)),
            Err(e) => return Err(e.into()),
        };
        self.floor.store(Floor::Open(info.id).encode(), Ordering::Release);
        if let Some(f) = &mut self.full {
            f.allocations += 1;
        }
        let mut conns = Vec::new();
        let mut failed = None;
        let timeout = self.client.config.replica_timeout;
        for r in &info.replicas {
            let created = match self.client.conn(r.node).await {
                Ok(c) => within(r.node, timeout, c.create(info.id, self.epoch, r.device)).await.map(|()| c),
                Err(failure) => Err(failure),
            };
            match created {
                Ok(c) => conns.push(c),
                Err(failure) => {
                    self.note_full(&failure);
                    failed = Some(Setback::Create { extent: info.id, failure });
                }
            }
        }
        self.client.extents.lock().insert(info.id, info.clone());
        self.tail.open = Some(OpenExtent { info, conns, len: 0, submitted: 0 });
        if let Some(why) = failed {
            self.seal_open().await?;
            return Ok(Allocation::Retry(why));
        }
        Ok(Allocation::Open)
    }
}

/// A datanode refused for lack of space (bytes or metadata slots).
fn is_no_space(failure: &ReplicaFailure) -> bool {
    matches!(failure, ReplicaFailure::Refused { error: ClientError::Extent(ExtentError::NoSpace { .. }), .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_encode_in_one_word_and_combine() {
        for f in [Floor::Open(ExtentId(7)), Floor::Idle(ExtentId(7)), Floor::Empty, Floor::Idle(ExtentId(1 << 40))] {
            assert_eq!(Floor::decode(f.encode()), f);
        }
        let (o, i) = (|n| Floor::Open(ExtentId(n)), |n| Floor::Idle(ExtentId(n)));
        // Open writers: the smallest open extent.
        assert_eq!(combine([o(9), o(4), Floor::Empty]), ExtentId(4));
        // Idle writers allocate above every existing extent: the largest idle floor.
        assert_eq!(combine([i(5), i(12), Floor::Empty]), ExtentId(12));
        // Both: whichever is lower.
        assert_eq!(combine([i(5), i(12), o(10)]), ExtentId(10));
        assert_eq!(combine([i(5), o(30)]), ExtentId(5));
        assert_eq!(combine([Floor::Empty]), ExtentId(0));
        assert_eq!(combine([]), ExtentId(0));
    }
}
