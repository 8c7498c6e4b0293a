//! Two threads per device own every write to it.
//!
//! The **writer** (`writer`) takes everything queued (up to `ROUND_BYTES_MAX`), writes
//! one batch per touched extent plus any metadata changes, and hands the round to the
//! flusher.
//! The **flusher** takes every round whose writes have completed, issues **one**
//! flush for all of them, and only then publishes the new durable lengths that release
//! the waiting acknowledgements. While one flush runs, the writer already writes the
//! next round, so a round costs max(write, flush) rather than their sum; appends that
//! arrive meanwhile share the next flush. That is the group commit.
//!
//! A failed flush poisons the device: nothing later is acknowledged, because after a
//! failed fdatasync the kernel may have dropped dirty state a later one would not see.

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use proto::{Epoch, ExtentError, ExtentId};
use tokio::sync::oneshot;

use super::record::RecordLoc;
use super::Extent;
use crate::align::{align_up, BufPool, IO_UNIT_BYTES};
use crate::blobstore::{BlobError, BlobId, BlobStore};
use crate::limits::{GROW_CLUSTERS_MAX, ROUNDS_UNFLUSHED_MAX};
use crate::metrics::DeviceStats;

mod writer;

use writer::Writer;

pub struct AppendOp {
    pub ext: Arc<Extent>,
    pub logical: u64,
    pub epoch: Epoch,
    pub crc: u32,
    /// Per-chunk CRCs for payloads longer than `record::RECORD_CHUNK_BYTES`.
    pub chunks: Option<Arc<[u32]>>,
    pub payload: super::Payload,
}

/// Where a create, seal or delete is answered, once its metadata is durable.
pub type Reply<T> = oneshot::Sender<Result<T, ExtentError>>;

pub enum DeviceOp {
    Append(AppendOp),
    Create {
        extent: ExtentId,
        epoch: Epoch,
        reply: Reply<BlobId>,
    },
    Seal {
        ext: Arc<Extent>,
        length: u64,
        reply: Reply<()>,
    },
    Delete {
        ext: Arc<Extent>,
        reply: Reply<()>,
    },
    /// Persists a u64 xattr of the extent and answers once it is durable: a fence's
    /// epoch (the fence is in force in memory already), or when scrub last found the
    /// copy intact.
    Mark {
        ext: Arc<Extent>,
        key: &'static str,
        value: u64,
        reply: Reply<()>,
    },
}

impl DeviceOp {
    fn extent(&self) -> Option<ExtentId> {
        match self {
            DeviceOp::Append(a) => Some(a.ext.id),
            DeviceOp::Seal { ext, .. } | DeviceOp::Delete { ext, .. } | DeviceOp::Mark { ext, .. } => Some(ext.id),
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
    /// `Ok` while no flush has failed; after that, the error every write gets.
    fn check(&self) -> Result<(), ExtentError> {
        match self.get() {
            Some(why) => Err(ExtentError::Io(format!("device failed earlier: {why}"))),
            None => Ok(()),
        }
    }
}

/// What a written round waits on the flush for.
#[derive(Default)]
struct Written {
    /// Extents whose batch was written: (extent, records).
    appended: Vec<(Arc<Extent>, Vec<RecordLoc>)>,
    created: Vec<(BlobId, Reply<BlobId>)>,
    /// Seals and deletes, with their metadata write's result.
    metadata: Vec<MetadataChange>,
    appends: u64,
    write_us: u64,
}

/// A seal (`sealed_at` set) or a delete whose metadata was written.
struct MetadataChange {
    ext: Arc<Extent>,
    sealed_at: Option<u64>,
    reply: Reply<()>,
    written: Result<(), ExtentError>,
}

/// Starts the writer and flusher threads of one device.
pub fn start(
    device: u32,
    store: Arc<dyn BlobStore>,
    rx: Receiver<DeviceOp>,
    poison: Arc<Poison>,
    stats: Arc<DeviceStats>,
) -> Vec<std::thread::JoinHandle<()>> {
    let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<Written>(ROUNDS_UNFLUSHED_MAX);
    let s = store.clone();
    let p = poison.clone();
    let writer = std::thread::Builder::new()
        .name(format!("device-{device}"))
        .spawn(move || {
            Writer { device, store: &*s, carry: VecDeque::new(), pool: BufPool::default() }.run(rx, flush_tx, &p)
        })
        .expect("spawn device writer");
    let flusher = std::thread::Builder::new()
        .name(format!("device-{device}-flush"))
        .spawn(move || flusher(device, &*store, flush_rx, &poison, &stats))
        .expect("spawn device flusher");
    vec![writer, flusher]
}

fn flusher(device: u32, store: &dyn BlobStore, rx: Receiver<Written>, poison: &Poison, metrics: &DeviceStats) {
    let mut stats = FlushStats::default();
    while let Ok(first) = rx.recv() {
        // Every round written by now shares this one flush.
        let mut rounds = vec![first];
        while let Ok(r) = rx.try_recv() {
            rounds.push(r);
        }
        let t = Instant::now();
        let flushed = poison.check().and_then(|()| {
            store.flush().map_err(|e| {
                let why = format!("flush failed: {e}");
                tracing::error!("device {device}: {why}; refusing all further writes");
                poison.set(why.clone());
                ExtentError::Io(why)
            })
        });
        let took = t.elapsed();
        stats.note(device, &rounds, t);
        match &flushed {
            Ok(()) => {
                let appends = rounds.iter().map(|r| r.appends).sum::<u64>();
                let bytes =
                    rounds.iter().flat_map(|r| &r.appended).flat_map(|(_, locs)| locs).map(|l| l.len as u64).sum();
                metrics.flushed(appends, bytes, took);
            }
            Err(_) => {
                metrics.errors.inc();
            }
        }
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
