//! Two threads per device own every write to it.
//!
//! The **writer** takes everything queued (up to `ROUND_BYTES_MAX`), writes one batch
//! per touched extent plus any metadata changes, and hands the round to the flusher.
//! The **flusher** takes every round whose writes have completed, issues **one**
//! flush for all of them, and only then publishes the new durable lengths that release
//! the waiting acknowledgements. While one flush runs, the writer already writes the
//! next round, so a round costs max(write, flush) rather than their sum; appends that
//! arrive meanwhile share the next flush. That is the group commit.
//!
//! A failed flush poisons the device: nothing later is acknowledged, because after a
//! failed fdatasync the kernel may have dropped dirty state a later one would not see.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use proto::{Epoch, ExtentError, ExtentId};
use tokio::sync::oneshot;

use super::record::{self, BatchHeader, Pending, RecordLoc};
use super::{xattr, Extent};
use crate::align::{align_up, AlignedBuf, BufPool, IO_UNIT_BYTES};
use crate::blobstore::{clusters_for, BlobError, BlobId, BlobStore, BlobWrite};

/// Most payload bytes one round takes before it writes.
pub const ROUND_BYTES_MAX: u64 = 64 << 20;
/// Most payload bytes of one extent in one batch; the rest waits for the next round, so
/// that an extent's batches are written strictly one after another.
pub const BATCH_BYTES_MAX: u64 = 16 << 20;
/// Written rounds waiting for a flush before the writer waits too.
const ROUNDS_UNFLUSHED_MAX: usize = 4;

pub struct AppendOp {
    pub ext: Arc<Extent>,
    pub logical: u64,
    pub epoch: Epoch,
    pub crc: u32,
    /// Per-chunk CRCs for payloads longer than `record::RECORD_CHUNK_BYTES`.
    pub chunks: Option<Arc<[u32]>>,
    pub payload: super::Payload,
}

pub enum DeviceOp {
    Append(AppendOp),
    Create { extent: ExtentId, epoch: Epoch, reply: oneshot::Sender<Result<BlobId, ExtentError>> },
    Seal { ext: Arc<Extent>, length: u64, reply: oneshot::Sender<Result<(), ExtentError>> },
    Delete { ext: Arc<Extent>, reply: oneshot::Sender<Result<(), ExtentError>> },
}

impl DeviceOp {
    fn extent(&self) -> Option<ExtentId> {
        match self {
            DeviceOp::Append(a) => Some(a.ext.id),
            DeviceOp::Seal { ext, .. } | DeviceOp::Delete { ext, .. } => Some(ext.id),
            DeviceOp::Create { .. } => None,
        }
    }
}

pub fn blob_err(device: u32, e: BlobError) -> ExtentError {
    match e {
        BlobError::NoSpace | BlobError::NoSlots => ExtentError::NoSpace { device: device as u64 },
        other => ExtentError::Io(other.to_string()),
    }
}

/// Most clusters one resize adds beyond what is needed now.
const GROW_CLUSTERS_MAX: u64 = 8;

/// How many clusters a blob holding `have` and needing `need` grows to: by doubling, up
/// to `GROW_CLUSTERS_MAX` extra at a time, so a growing extent's clusters stay mostly
/// contiguous (big writes stay big) while small extents stay small.
fn grow_to(have: u64, need: u64, max: u64) -> u64 {
    debug_assert!(need > have);
    need.max(have + have.clamp(1, GROW_CLUSTERS_MAX)).min(max).max(need)
}

/// Physical bytes an append can take at most if it ends up alone in its batch.
pub fn worst_case_phys(len: u64) -> u64 {
    // An aligned batch of one: a header unit plus the padded payload (a packed one is
    // never larger).
    IO_UNIT_BYTES + align_up(len, IO_UNIT_BYTES)
}

/// Set once a flush has failed; every later acknowledgement is refused.
#[derive(Default)]
pub struct Poison(Mutex<Option<String>>);

impl Poison {
    pub fn get(&self) -> Option<String> {
        self.0.lock().clone()
    }
    fn set(&self, why: String) {
        self.0.lock().get_or_insert(why);
    }
}

/// What a written round waits on the flush for.
#[derive(Default)]
struct Written {
    /// Extents whose batch was written: (extent, records).
    appended: Vec<(Arc<Extent>, Vec<RecordLoc>)>,
    created: Vec<(BlobId, oneshot::Sender<Result<BlobId, ExtentError>>)>,
    /// Seals and deletes, with their metadata write's result.
    metadata: Vec<MetadataChange>,
    appends: u64,
    write_us: u64,
}

/// A seal (`sealed_at` set) or a delete whose metadata was written.
struct MetadataChange {
    ext: Arc<Extent>,
    sealed_at: Option<u64>,
    reply: oneshot::Sender<Result<(), ExtentError>>,
    written: Result<(), ExtentError>,
}

struct Batch {
    ext: Arc<Extent>,
    appends: Vec<AppendOp>,
    bytes: u64,
}

/// Starts the writer and flusher threads of one device.
pub fn start(
    device: u32,
    store: Arc<dyn BlobStore>,
    rx: Receiver<DeviceOp>,
    poison: Arc<Poison>,
) -> Vec<std::thread::JoinHandle<()>> {
    let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<Written>(ROUNDS_UNFLUSHED_MAX);
    let s = store.clone();
    let p = poison.clone();
    let writer = std::thread::Builder::new()
        .name(format!("device-{device}"))
        .spawn(move || writer(device, &*s, rx, flush_tx, &p))
        .expect("spawn device writer");
    let flusher = std::thread::Builder::new()
        .name(format!("device-{device}-flush"))
        .spawn(move || flusher(device, &*store, flush_rx, &poison))
        .expect("spawn device flusher");
    vec![writer, flusher]
}

fn writer(device: u32, store: &dyn BlobStore, rx: Receiver<DeviceOp>, flush_tx: SyncSender<Written>, poison: &Poison) {
    let mut carry: VecDeque<DeviceOp> = VecDeque::new();
    let mut pool = BufPool::default();
    loop {
        // Gather a round: what was carried over, then everything queued.
        if carry.is_empty() {
            match rx.recv() {
                Ok(op) => carry.push_back(op),
                Err(_) => return, // every sender is gone: shut down (the flusher follows)
            }
        }
        let mut ops: Vec<DeviceOp> = carry.drain(..).collect();
        let mut round_bytes: u64 = ops.iter().map(op_bytes).sum();
        while round_bytes < ROUND_BYTES_MAX {
            match rx.try_recv() {
                Ok(op) => {
                    round_bytes += op_bytes(&op);
                    ops.push(op);
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        let written = write_round(device, store, ops, &mut carry, &mut pool, poison);
        if flush_tx.send(written).is_err() {
            return;
        }
    }
}

fn op_bytes(op: &DeviceOp) -> u64 {
    match op {
        DeviceOp::Append(a) => a.payload.len() as u64,
        _ => 0,
    }
}

fn write_round(
    device: u32,
    store: &dyn BlobStore,
    ops: Vec<DeviceOp>,
    carry: &mut VecDeque<DeviceOp>,
    pool: &mut BufPool,
    poison: &Poison,
) -> Written {
    let mut batches: Vec<Batch> = Vec::new();
    let mut batch_of: HashMap<ExtentId, usize> = HashMap::new();
    let mut deferred: HashSet<ExtentId> = HashSet::new();
    let mut out = Written::default();
    let mut seals = Vec::new();
    let mut deletes = Vec::new();
    let poisoned = poison.get().map(|why| ExtentError::Io(format!("device failed earlier: {why}")));

    for op in ops {
        // Keep each extent's operations in order: once one is deferred, all later ones are.
        if op.extent().is_some_and(|e| deferred.contains(&e)) {
            carry.push_back(op);
            continue;
        }
        match op {
            DeviceOp::Append(a) => {
                let i = *batch_of.entry(a.ext.id).or_insert_with(|| {
                    batches.push(Batch { ext: a.ext.clone(), appends: Vec::new(), bytes: 0 });
                    batches.len() - 1
                });
                let b = &mut batches[i];
                if !b.appends.is_empty() && b.bytes + a.payload.len() as u64 > BATCH_BYTES_MAX {
                    deferred.insert(a.ext.id);
                    carry.push_back(DeviceOp::Append(a));
                    continue;
                }
                b.bytes += a.payload.len() as u64;
                b.appends.push(a);
            }
            DeviceOp::Create { extent, epoch, reply } => {
                if let Some(e) = &poisoned {
                    let _ = reply.send(Err(e.clone()));
                    continue;
                }
                let x = xattr::initial(extent, epoch);
                let attrs: Vec<(&str, &[u8])> = x.iter().map(|(k, v)| (*k, &v[..])).collect();
                match store.create_blob(&attrs, 0) {
                    Ok(blob) => out.created.push((blob, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(blob_err(device, e)));
                    }
                }
            }
            DeviceOp::Seal { ext, length, reply } => seals.push((ext, length, reply)),
            DeviceOp::Delete { ext, reply } => deletes.push((ext, reply)),
        }
    }

    // One batch image per extent, continuing where its previous batch was written.
    // (batch, image or header block, records, blob offset, blob offset after, aligned layout)
    let mut images: Vec<(usize, AlignedBuf, Vec<RecordLoc>, u64, u64, bool)> = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        if let Some(e) = &poisoned {
            b.ext.fail(e.to_string());
            continue;
        }
        let (phys, incarnation, have) = {
            let st = b.ext.st.lock();
            if st.deleted || st.failed.is_some() {
                continue; // their waiters have already been told
            }
            assert_eq!(b.appends[0].logical, st.written_len, "batches continue the written chain");
            (st.phys_end, st.incarnation, st.blob_bytes)
        };
        // Payloads received into aligned buffers go to the device as they are; any other
        // batch is packed into one image.
        let aligned = b.appends.iter().all(|a| a.payload.padded().is_some());
        let h = BatchHeader {
            blob: b.ext.blob,
            incarnation,
            n_records: b.appends.len() as u32,
            logical_start: b.appends[0].logical,
            payload_bytes: b.bytes,
            epoch: b.appends.iter().map(|a| a.epoch).max().expect("non-empty batch"),
            aligned,
        };
        let records: Vec<Pending<'_>> = b
            .appends
            .iter()
            .map(|a| Pending { payload: a.payload.as_slice(), crc: a.crc, chunks: a.chunks.as_ref() })
            .collect();
        let (image, locs) = record::encode(pool, &h, phys, &records);
        let end = phys
            + image.len() as u64
            + if aligned {
                b.appends.iter().map(|a| a.payload.padded().expect("aligned").len() as u64).sum()
            } else {
                0
            };
        let grown = if have >= end {
            Ok(())
        } else {
            let need = clusters_for(end, store.cluster_bytes());
            let want = grow_to(have / store.cluster_bytes(), need, store.blob_clusters_max());
            // On a nearly full device, take just what this batch needs.
            let clusters = match store.resize(b.ext.blob, want) {
                Err(BlobError::NoSpace) if want > need => store.resize(b.ext.blob, need).map(|()| need),
                r => r.map(|()| want),
            };
            clusters.map(|c| b.ext.st.lock().blob_bytes = c * store.cluster_bytes())
        };
        match grown {
            Ok(()) => images.push((i, image, locs, phys, end, aligned)),
            Err(e) => {
                pool.give(image);
                b.ext.fail(blob_err(device, e).to_string());
            }
        }
    }
    let writes: Vec<BlobWrite<'_>> = images
        .iter()
        .map(|(i, image, _, phys, end, aligned)| {
            let mut bufs: Vec<&[u8]> = vec![&image[..]];
            if *aligned {
                // The header block, then each payload as it was received.
                bufs.extend(batches[*i].appends.iter().map(|a| a.payload.padded().expect("aligned batch")));
            }
            debug_assert_eq!(bufs.iter().map(|b| b.len() as u64).sum::<u64>(), end - phys);
            BlobWrite { blob: batches[*i].ext.blob, offset: *phys, bufs }
        })
        .collect();
    let t = Instant::now();
    let results = store.write_batch(&writes);
    out.write_us = t.elapsed().as_micros() as u64;
    drop(writes);
    for ((i, image, locs, _, end, _), r) in images.into_iter().zip(results) {
        pool.give(image);
        let ext = &batches[i].ext;
        match r {
            Ok(()) => {
                let mut st = ext.st.lock();
                st.written_len = locs.last().expect("non-empty batch").end();
                st.phys_end = end;
                drop(st);
                out.appends += locs.len() as u64;
                out.appended.push((ext.clone(), locs));
            }
            Err(e) => ext.fail(e.to_string()),
        }
    }

    for (ext, length, reply) in seals {
        let r = match &poisoned {
            Some(e) => Err(e.clone()),
            None => store
                .set_xattr(ext.blob, xattr::SEALED, &length.to_le_bytes())
                .and_then(|_| store.sync_md(ext.blob))
                .map_err(|e| blob_err(device, e)),
        };
        out.metadata.push(MetadataChange { ext, sealed_at: Some(length), reply, written: r });
    }
    for (ext, reply) in deletes {
        let r = match &poisoned {
            Some(e) => Err(e.clone()),
            None => store.delete_blob(ext.blob).map_err(|e| blob_err(device, e)),
        };
        out.metadata.push(MetadataChange { ext, sealed_at: None, reply, written: r });
    }
    out
}

fn flusher(device: u32, store: &dyn BlobStore, rx: Receiver<Written>, poison: &Poison) {
    let mut stats = FlushStats::default();
    while let Ok(first) = rx.recv() {
        // Every round written by now shares this one flush.
        let mut rounds = vec![first];
        while let Ok(r) = rx.try_recv() {
            rounds.push(r);
        }
        let t = Instant::now();
        let flushed = match poison.get() {
            Some(why) => Err(ExtentError::Io(format!("device failed earlier: {why}"))),
            None => store.flush().map_err(|e| {
                let why = format!("flush failed: {e}");
                tracing::error!("device {device}: {why}; refusing all further writes");
                poison.set(why.clone());
                ExtentError::Io(why)
            }),
        };
        stats.note(device, &rounds, t);
        for w in rounds {
            for (ext, locs) in w.appended {
                match &flushed {
                    Ok(()) => ext.made_durable(&locs),
                    Err(e) => ext.fail(e.to_string()),
                }
            }
            for (blob, reply) in w.created {
                let _ = reply.send(flushed.clone().map(|_| blob));
            }
            for MetadataChange { ext, sealed_at, reply, written } in w.metadata {
                let r = written.and(flushed.clone());
                if let (Ok(()), Some(l)) = (&r, sealed_at) {
                    ext.sealed_durably(l);
                }
                let _ = reply.send(r);
            }
        }
    }
}

/// Group-commit figures, logged once a second at debug level.
#[derive(Default)]
struct FlushStats {
    since: Option<Instant>,
    flushes: u64,
    rounds: u64,
    appends: u64,
    flush_us: u64,
    write_us: u64,
}

impl FlushStats {
    fn note(&mut self, device: u32, rounds: &[Written], flush_started: Instant) {
        self.flush_us += flush_started.elapsed().as_micros() as u64;
        self.flushes += 1;
        self.rounds += rounds.len() as u64;
        self.appends += rounds.iter().map(|r| r.appends).sum::<u64>();
        self.write_us += rounds.iter().map(|r| r.write_us).sum::<u64>();
        let since = *self.since.get_or_insert_with(Instant::now);
        if since.elapsed().as_secs() >= 1 {
            tracing::debug!(
                "device {device}: {} flushes, {:.2} rounds and {:.1} appends per flush, {} us per flush, {} us per round's write",
                self.flushes,
                self.rounds as f64 / self.flushes as f64,
                self.appends as f64 / self.flushes as f64,
                self.flush_us / self.flushes,
                self.write_us / self.rounds.max(1)
            );
            *self = FlushStats { since: Some(Instant::now()), ..Default::default() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::grow_to;

    #[test]
    fn blobs_grow_by_doubling_up_to_a_step_and_never_past_the_limit() {
        assert_eq!(grow_to(0, 1, 880), 1);
        assert_eq!(grow_to(1, 2, 880), 2);
        assert_eq!(grow_to(4, 5, 880), 8);
        assert_eq!(grow_to(16, 17, 880), 24, "at most 8 clusters beyond the need");
        assert_eq!(grow_to(10, 40, 880), 40, "a big need is met in one step");
        assert_eq!(grow_to(878, 879, 880), 880);
        assert_eq!(grow_to(879, 880, 880), 880);
    }
}
