//! Extents on blob stores: the datanode's storage engine.
//!
//! An extent is one blob. Appends are accepted in memory in order (offset and epoch
//! checks happen under the extent's lock, so requests pipelined on one connection keep
//! their order), handed to the device thread, and acknowledged only once the device
//! thread has published a durable length that covers them.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use proto::msg::ANY_DEVICE;
use proto::{DeviceStat, Epoch, ExtentError, ExtentId, ExtentStat, APPEND_BYTES_MAX, READ_BYTES_MAX};
use tokio::sync::{oneshot, watch};

use crate::align::{align_down, align_up, AlignedBuf, PooledBuf, IO_UNIT_BYTES};
use crate::blobstore::backend::BackendConfig;
use crate::blobstore::{self, BlobError, BlobId, BlobStore};

pub mod device;
pub mod record;

use device::{worst_case_phys, AppendOp, DeviceOp};
use record::RecordLoc;

/// An append's bytes as the server received them.
pub enum Payload {
    /// Copied into the batch image when written.
    Bytes(Bytes),
    /// Received straight into an io-aligned buffer: `buf[..len]` is the payload and the
    /// rest of `buf` is zeros, so it is written to the device as it is, without a copy.
    Aligned { buf: PooledBuf, len: usize },
}

impl Payload {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Bytes(b) => b,
            Payload::Aligned { buf, len } => &buf[..*len],
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload padded with zeros to whole io units, when it can be written as it is.
    pub fn padded(&self) -> Option<&[u8]> {
        match self {
            Payload::Bytes(_) => None,
            Payload::Aligned { buf, len } => {
                debug_assert_eq!(buf.len() as u64, align_up(*len as u64, IO_UNIT_BYTES));
                debug_assert!(buf[*len..].iter().all(|&b| b == 0));
                Some(&buf[..])
            }
        }
    }
}

/// Default cap on one extent's logical size.
pub const EXTENT_BYTES_MAX_DEFAULT: u64 = 256 << 20;

/// Blob xattrs that carry an extent's identity and state.
pub mod xattr {
    use proto::{Epoch, ExtentId};
    pub const EXTENT: &str = "extent";
    pub const EPOCH: &str = "epoch";
    pub const INCARNATION: &str = "incarnation";
    pub const SEALED: &str = "sealed";

    pub fn initial(extent: ExtentId, epoch: Epoch) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (EXTENT, extent.to_le_bytes().to_vec()),
            (EPOCH, epoch.to_le_bytes().to_vec()),
            (INCARNATION, 1u32.to_le_bytes().to_vec()),
        ]
    }

    pub fn u64_of(v: Option<&Vec<u8>>) -> Option<u64> {
        Some(u64::from_le_bytes(v?.as_slice().try_into().ok()?))
    }

    pub fn u32_of(v: Option<&Vec<u8>>) -> Option<u32> {
        Some(u32::from_le_bytes(v?.as_slice().try_into().ok()?))
    }
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The devices and the backend that serves them.
    pub backend: BackendConfig,
    pub extent_bytes_max: u64,
    pub append_bytes_max: u32,
}

/// What a seal waits on (appends wait through `ExtentState::waiters`).
#[derive(Debug, Clone, Default)]
struct Progress {
    durable_len: u64,
    failed: Option<String>,
    deleted: bool,
}

struct ExtentState {
    epoch: Epoch,
    /// Bytes accepted in order (durable or queued).
    accepted_len: u64,
    /// Bytes written to the device (the writer thread's position), flushed or not.
    written_len: u64,
    durable_len: u64,
    /// Set when a seal starts: no append past it is ever acknowledged.
    limit: Option<u64>,
    /// The seal is durable.
    sealed: bool,
    deleted: bool,
    failed: Option<String>,
    index: Vec<RecordLoc>,
    /// Accepted, not yet durable: (logical, len, crc), for retries and seal boundaries.
    pending: VecDeque<(u64, u32, u32)>,
    /// Worst-case physical bytes the pending appends can take.
    pending_phys: u64,
    /// Appends waiting to be acknowledged: (end offset, acknowledgement).
    waiters: VecDeque<(u64, Ack)>,
    /// Bytes the blob holds now (kept by the writer thread).
    blob_bytes: u64,
    phys_end: u64,
    incarnation: u32,
}

pub struct Extent {
    pub id: ExtentId,
    pub device: u32,
    pub blob: BlobId,
    st: Mutex<ExtentState>,
    progress: watch::Sender<Progress>,
}

impl Extent {
    /// Publishes the extent's progress and takes every acknowledgement it now decides;
    /// the caller runs them with [`fire`] after releasing the lock.
    #[must_use]
    fn publish(&self, st: &mut ExtentState) -> Fired {
        self.progress.send_replace(Progress {
            durable_len: st.durable_len,
            failed: st.failed.clone(),
            deleted: st.deleted,
        });
        let mut fired = Vec::new();
        let mut i = 0;
        while i < st.waiters.len() {
            match decide(st, self.id, st.waiters[i].0) {
                Some(r) => fired.push((st.waiters.swap_remove_back(i).expect("in range").1, r)),
                None => i += 1,
            }
        }
        fired
    }

    /// Called by the flusher after the flush that made `locs` durable.
    fn made_durable(&self, locs: &[RecordLoc]) {
        let mut st = self.st.lock();
        for l in locs {
            let (logical, len, crc) = st.pending.pop_front().expect("durable record was pending");
            assert_eq!((logical, len, crc), (l.logical, l.len, l.crc), "records complete in order");
            assert_eq!(l.logical, st.durable_len);
            st.pending_phys -= worst_case_phys(len as u64);
            st.durable_len = l.end();
        }
        st.index.extend_from_slice(locs);
        let fired = self.publish(&mut st);
        drop(st);
        fire(fired);
    }

    fn fail(&self, why: String) {
        let mut st = self.st.lock();
        if st.failed.is_none() {
            tracing::error!("extent {} failed: {why}", self.id);
            st.failed = Some(why);
            let fired = self.publish(&mut st);
            drop(st);
            fire(fired);
        }
    }

    fn sealed_durably(&self, length: u64) {
        let mut st = self.st.lock();
        st.sealed = true;
        debug_assert_eq!(st.limit, Some(length));
        let fired = self.publish(&mut st);
        drop(st);
        fire(fired);
    }

    /// Waits until the first `length` bytes are durable; fails if the extent is deleted
    /// or failed first.
    async fn durable(&self, length: u64) -> Result<(), ExtentError> {
        let mut rx = self.progress.subscribe();
        let p = rx
            .wait_for(|p| p.deleted || p.failed.is_some() || p.durable_len >= length)
            .await
            .map_err(|_| ExtentError::ShuttingDown)?
            .clone();
        if p.deleted {
            return Err(ExtentError::NotFound { extent: self.id });
        }
        if p.durable_len < length {
            return Err(ExtentError::Failed(p.failed.unwrap_or_default()));
        }
        Ok(())
    }

    fn stat(&self) -> ExtentStat {
        let st = self.st.lock();
        ExtentStat {
            extent: self.id,
            epoch: st.epoch,
            length: readable_len(&st),
            sealed: st.sealed,
            device: self.device,
        }
    }
}

/// The answer to an append waiting for `end` to be durable, once there is one.
fn decide(st: &ExtentState, extent: ExtentId, end: u64) -> Option<Result<u64, ExtentError>> {
    if st.deleted {
        return Some(Err(ExtentError::NotFound { extent }));
    }
    if let Some(l) = st.limit.filter(|&l| end > l) {
        return Some(Err(ExtentError::Sealed { length: l }));
    }
    if st.durable_len >= end {
        return Some(Ok(end));
    }
    st.failed.as_ref().map(|why| Err(ExtentError::Failed(why.clone())))
}

/// Called once with an append's outcome: its end offset once durable, or why not.
pub type Ack = Box<dyn FnOnce(Result<u64, ExtentError>) + Send>;
type Fired = Vec<(Ack, Result<u64, ExtentError>)>;

fn fire(fired: Fired) {
    for (ack, r) in fired {
        ack(r);
    }
}

fn readable_len(st: &ExtentState) -> u64 {
    st.limit.map_or(st.durable_len, |l| l.min(st.durable_len))
}

/// Is `offset` where some accepted append ends (or 0)?
fn is_boundary(st: &ExtentState, offset: u64) -> Result<(), u64> {
    if offset == 0
        || st.index.binary_search_by_key(&offset, |r| r.end()).is_ok()
        || st.pending.iter().any(|&(l, n, _)| l + n as u64 == offset)
    {
        return Ok(());
    }
    let below = st.index.partition_point(|r| r.end() <= offset);
    let mut boundary = if below == 0 { 0 } else { st.index[below - 1].end() };
    for &(l, n, _) in &st.pending {
        if l + n as u64 <= offset {
            boundary = l + n as u64;
        }
    }
    Err(boundary)
}

struct Device {
    store: Arc<dyn BlobStore>,
    tx: Mutex<Option<Sender<DeviceOp>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    poison: Arc<device::Poison>,
}

impl Device {
    fn send(&self, op: DeviceOp) -> Result<(), ExtentError> {
        match &*self.tx.lock() {
            Some(tx) => tx.send(op).map_err(|_| ExtentError::ShuttingDown),
            None => Err(ExtentError::ShuttingDown),
        }
    }
}

/// Summary of what start-up recovery found.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub extents: usize,
    pub sealed: usize,
    pub torn_bytes_dropped: u64,
    pub corrupt_records: usize,
}

/// All extents of one datanode, over all its devices.
pub struct ExtentStore {
    devices: Vec<Device>,
    extents: RwLock<HashMap<ExtentId, Arc<Extent>>>,
    create_lock: tokio::sync::Mutex<()>,
    extent_bytes_max: u64,
    append_bytes_max: u32,
    pub recovery: Recovery,
}

impl ExtentStore {
    /// Opens (formatting new files) every device and recovers every extent on them.
    pub fn open(cfg: &StoreConfig) -> anyhow::Result<ExtentStore> {
        Self::with_stores(blobstore::backend::open(&cfg.backend)?, cfg.extent_bytes_max, cfg.append_bytes_max)
    }

    pub fn with_stores(
        stores: Vec<Arc<dyn BlobStore>>,
        extent_bytes_max: u64,
        append_bytes_max: u32,
    ) -> anyhow::Result<ExtentStore> {
        anyhow::ensure!(!stores.is_empty(), "a datanode needs at least one device");
        anyhow::ensure!(
            append_bytes_max > 0 && append_bytes_max <= APPEND_BYTES_MAX,
            "append_bytes_max must be between 1 and {APPEND_BYTES_MAX}"
        );
        let mut extents = HashMap::new();
        let mut recovery = Recovery::default();
        for (di, store) in stores.iter().enumerate() {
            let blob_max = store.blob_bytes_max();
            anyhow::ensure!(
                worst_case_phys(extent_bytes_max) <= blob_max,
                "extent_bytes_max {extent_bytes_max} is more than one blob of device {di} can hold ({blob_max} bytes); lower it or use larger clusters"
            );
            let blobs = store.blobs();
            let mut reported = std::time::Instant::now();
            for (n, info) in blobs.iter().enumerate() {
                if reported.elapsed().as_secs() >= 2 {
                    tracing::info!("device {di}: recovered {n} of {} extents", blobs.len());
                    reported = std::time::Instant::now();
                }
                let Some(id) = xattr::u64_of(info.xattrs.get(xattr::EXTENT)) else {
                    tracing::warn!("device {di}: blob {:#x} has no extent id; deleting the orphan", info.id);
                    store.delete_blob(info.id)?;
                    continue;
                };
                if extents.contains_key(&id) {
                    tracing::error!("device {di}: extent {id} is also on another device; ignoring this copy");
                    continue;
                }
                let ext = Self::recover(di as u32, &**store, info, &mut recovery)?;
                extents.insert(id, Arc::new(ext));
            }
            store.flush()?;
        }
        recovery.extents = extents.len();
        let devices = stores
            .into_iter()
            .enumerate()
            .map(|(i, store)| {
                let (tx, rx) = std::sync::mpsc::channel();
                let poison = Arc::new(device::Poison::default());
                let threads = device::start(i as u32, store.clone(), rx, poison.clone());
                Device { store, tx: Mutex::new(Some(tx)), threads: Mutex::new(threads), poison }
            })
            .collect();
        Ok(ExtentStore {
            devices,
            extents: RwLock::new(extents),
            create_lock: tokio::sync::Mutex::new(()),
            extent_bytes_max,
            append_bytes_max,
            recovery,
        })
    }

    fn recover(
        device: u32,
        store: &dyn BlobStore,
        info: &crate::blobstore::BlobInfo,
        rec: &mut Recovery,
    ) -> anyhow::Result<Extent> {
        let id = xattr::u64_of(info.xattrs.get(xattr::EXTENT)).expect("checked by caller");
        let epoch = xattr::u64_of(info.xattrs.get(xattr::EPOCH)).unwrap_or(0);
        let sealed = xattr::u64_of(info.xattrs.get(xattr::SEALED));
        let incarnation = xattr::u32_of(info.xattrs.get(xattr::INCARNATION)).unwrap_or(1);
        let blob_bytes = info.clusters * store.cluster_bytes();
        let scan = record::scan(
            |off, buf| store.read(info.id, off, buf).map_err(std::io::Error::other),
            info.id,
            blob_bytes,
            sealed,
        )?;
        if !scan.corrupt.is_empty() {
            tracing::error!("extent {id}: {} records fail their checksum; reads of them will fail", scan.corrupt.len());
        }
        if scan.dropped_bytes > 0 {
            tracing::warn!("extent {id}: dropped a torn final write of {} bytes", scan.dropped_bytes);
        }
        if let Some(l) = sealed.filter(|&l| scan.length < l) {
            tracing::error!("extent {id}: sealed at {l} but only {} bytes are intact here", scan.length);
        }
        rec.torn_bytes_dropped += scan.dropped_bytes;
        rec.corrupt_records += scan.corrupt.len();
        // A new incarnation for every restart of an open extent, persisted before any
        // new write, so stale bytes beyond the recovered end can never join the chain.
        let incarnation = incarnation.max(scan.incarnation_max) + 1;
        if sealed.is_none() {
            store.set_xattr(info.id, xattr::INCARNATION, &incarnation.to_le_bytes())?;
            store.sync_md(info.id)?;
        } else {
            rec.sealed += 1;
        }
        let st = ExtentState {
            epoch: epoch.max(scan.epoch_max),
            accepted_len: scan.length,
            written_len: scan.length,
            durable_len: scan.length,
            limit: sealed,
            sealed: sealed.is_some(),
            deleted: false,
            failed: None,
            index: scan.records,
            pending: VecDeque::new(),
            pending_phys: 0,
            waiters: VecDeque::new(),
            blob_bytes,
            phys_end: scan.phys_end,
            incarnation,
        };
        let (progress, _) = watch::channel(Progress::default());
        let ext = Extent { id, device, blob: info.id, st: Mutex::new(st), progress };
        let fired = ext.publish(&mut ext.st.lock());
        debug_assert!(fired.is_empty());
        Ok(ext)
    }

    fn get(&self, extent: ExtentId) -> Result<Arc<Extent>, ExtentError> {
        self.extents.read().get(&extent).cloned().ok_or(ExtentError::NotFound { extent })
    }

    pub async fn create(&self, extent: ExtentId, epoch: Epoch, device: u32) -> Result<(), ExtentError> {
        let _serial = self.create_lock.lock().await;
        if self.extents.read().contains_key(&extent) {
            return Err(ExtentError::AlreadyExists { extent });
        }
        let device = if device == ANY_DEVICE {
            (0..self.devices.len())
                .max_by_key(|&i| self.devices[i].store.capacity().clusters_free)
                .expect("at least one device") as u32
        } else if (device as usize) < self.devices.len() {
            device
        } else {
            return Err(ExtentError::NoSuchDevice { device: device as u64 });
        };
        let (reply, rx) = oneshot::channel();
        self.devices[device as usize].send(DeviceOp::Create { extent, epoch, reply })?;
        let blob = rx.await.map_err(|_| ExtentError::ShuttingDown)??;
        let st = ExtentState {
            epoch,
            accepted_len: 0,
            written_len: 0,
            durable_len: 0,
            limit: None,
            sealed: false,
            deleted: false,
            failed: None,
            index: Vec::new(),
            pending: VecDeque::new(),
            pending_phys: 0,
            waiters: VecDeque::new(),
            blob_bytes: 0,
            phys_end: 0,
            incarnation: 1,
        };
        let (progress, _) = watch::channel(Progress::default());
        let ext = Arc::new(Extent { id: extent, device, blob, st: Mutex::new(st), progress });
        self.extents.write().insert(extent, ext);
        Ok(())
    }

    /// Checks and queues an append, in the caller's order. `ack` is called exactly once,
    /// from whichever thread decides it: at once with a refusal, or later with the new
    /// end offset once the append is durable, or with why it never will be.
    pub fn submit_append(
        &self,
        extent: ExtentId,
        expected_offset: u64,
        epoch: Epoch,
        crc: u32,
        payload: Payload,
        ack: Ack,
    ) {
        let (ext, end) = match self.accept(extent, expected_offset, epoch, crc, payload) {
            Ok(accepted) => accepted,
            Err(e) => return ack(Err(e)),
        };
        // Registering after the accept's lock was released loses nothing: progress only
        // moves forward, and `decide` sees whatever happened in between.
        let mut st = ext.st.lock();
        match decide(&st, extent, end) {
            Some(r) => {
                drop(st);
                ack(r);
            }
            None => st.waiters.push_back((end, ack)),
        }
    }

    /// The checks of an append and its hand-over to the device writer; returns the
    /// extent and the append's end offset.
    fn accept(
        &self,
        extent: ExtentId,
        expected_offset: u64,
        epoch: Epoch,
        crc: u32,
        payload: Payload,
    ) -> Result<(Arc<Extent>, u64), ExtentError> {
        let len = payload.len() as u64;
        if len > self.append_bytes_max as u64 {
            return Err(ExtentError::AppendTooLarge { bytes: len, limit: self.append_bytes_max as u64 });
        }
        if len == 0 {
            return Err(ExtentError::Malformed("empty append".into()));
        }
        let (computed, chunks) = record::checksums(payload.as_slice());
        if computed != crc {
            return Err(ExtentError::PayloadChecksum { sent: crc as u64, computed: computed as u64 });
        }
        let ext = self.get(extent)?;
        let mut st = ext.st.lock();
        // Offsets come off the wire: an end past u64::MAX is just a wrong offset.
        let Some(end) = expected_offset.checked_add(len) else {
            return Err(ExtentError::OffsetMismatch { expected_offset, length: st.accepted_len });
        };
        if st.deleted {
            return Err(ExtentError::NotFound { extent });
        }
        if let Some(why) = &st.failed {
            return Err(ExtentError::Failed(why.clone()));
        }
        if let Some(why) = self.devices[ext.device as usize].poison.get() {
            return Err(ExtentError::Failed(format!("device failed: {why}")));
        }
        if epoch < st.epoch {
            return Err(ExtentError::StaleEpoch { epoch, current: st.epoch });
        }
        if let Some(length) = st.limit {
            return Err(ExtentError::Sealed { length });
        }
        if expected_offset != st.accepted_len {
            // A retry of an append already accepted is acknowledged once durable.
            let same = |l: u64, n: u32, c: u32| l == expected_offset && n as u64 == len && c == crc;
            let known = st
                .index
                .binary_search_by_key(&expected_offset, |r| r.logical)
                .is_ok_and(|i| same(st.index[i].logical, st.index[i].len, st.index[i].crc))
                || st.pending.iter().any(|&(l, n, c)| same(l, n, c));
            if !known {
                return Err(ExtentError::OffsetMismatch { expected_offset, length: st.accepted_len });
            }
        } else {
            if end > self.extent_bytes_max {
                return Err(ExtentError::ExtentFull { length: st.accepted_len, limit: self.extent_bytes_max });
            }
            let phys = worst_case_phys(len);
            let dev = &self.devices[ext.device as usize];
            let blob_max = dev.store.blob_bytes_max();
            let phys_needed = st.phys_end + st.pending_phys + phys;
            if phys_needed > blob_max {
                return Err(ExtentError::ExtentFull { length: st.accepted_len, limit: st.accepted_len });
            }
            // Refuse cleanly now rather than fail the extent in the device thread.
            // (Concurrent appends to other extents can still race for the last clusters.)
            if phys_needed > st.blob_bytes {
                let cap = dev.store.capacity();
                if (phys_needed - st.blob_bytes).div_ceil(cap.cluster_bytes) > cap.clusters_free {
                    return Err(ExtentError::NoSpace { device: ext.device as u64 });
                }
            }
            st.epoch = epoch;
            st.accepted_len = end;
            st.pending.push_back((expected_offset, len as u32, crc));
            st.pending_phys += phys;
            // Sent under the lock so the device thread sees this extent's appends in order.
            dev.send(DeviceOp::Append(AppendOp {
                ext: ext.clone(),
                logical: expected_offset,
                epoch,
                crc,
                chunks,
                payload,
            }))?;
        }
        drop(st);
        Ok((ext, end))
    }

    pub async fn read(&self, extent: ExtentId, offset: u64, len: u32) -> Result<Bytes, ExtentError> {
        if len > READ_BYTES_MAX {
            return Err(ExtentError::ReadTooLarge { len: len as u64, limit: READ_BYTES_MAX as u64 });
        }
        let ext = self.get(extent)?;
        let end =
            offset.checked_add(len as u64).ok_or(ExtentError::OutOfRange { offset, len: len as u64, length: 0 })?;
        let locs: Vec<RecordLoc> = {
            let st = ext.st.lock();
            if st.deleted {
                return Err(ExtentError::NotFound { extent });
            }
            let readable = readable_len(&st);
            if end > readable {
                return Err(ExtentError::OutOfRange { offset, len: len as u64, length: readable });
            }
            if len == 0 {
                return Ok(Bytes::new());
            }
            let first = st.index.partition_point(|r| r.end() <= offset);
            let last = st.index.partition_point(|r| r.logical < end);
            st.index[first..last].to_vec()
        };
        let store = self.devices[ext.device as usize].store.clone();
        let blob = ext.blob;
        tokio::task::spawn_blocking(move || read_records(&*store, blob, &locs, offset, end))
            .await
            .map_err(|e| ExtentError::Io(e.to_string()))?
            .map_err(|e| match e {
                ReadError::Blob(BlobError::NotFound(_)) => ExtentError::NotFound { extent },
                ReadError::Blob(e) => ExtentError::Io(e.to_string()),
                ReadError::Checksum(offset) => ExtentError::ChecksumMismatch { offset },
            })
    }

    pub async fn seal(&self, extent: ExtentId, length: u64) -> Result<(), ExtentError> {
        let ext = self.get(extent)?;
        {
            let mut st = ext.st.lock();
            if st.deleted {
                return Err(ExtentError::NotFound { extent });
            }
            match st.limit {
                Some(l) if l != length => return Err(ExtentError::SealConflict { requested: length, length: l }),
                Some(_) if st.sealed => return Ok(()),
                Some(_) => {} // the same seal is under way: finish it again, idempotently
                None => {
                    if length > st.accepted_len {
                        return Err(ExtentError::SealBeyondEnd { requested: length, length: st.accepted_len });
                    }
                    if let Err(boundary) = is_boundary(&st, length) {
                        return Err(ExtentError::NotAppendBoundary { requested: length, boundary });
                    }
                    st.limit = Some(length);
                    let fired = ext.publish(&mut st);
                    drop(st);
                    fire(fired);
                }
            }
        }
        // The seal is persisted only after every byte below it is durable, so a sealed
        // length on disk never exceeds the data on disk.
        ext.durable(length).await?;
        let (reply, rx) = oneshot::channel();
        self.devices[ext.device as usize].send(DeviceOp::Seal { ext: ext.clone(), length, reply })?;
        rx.await.map_err(|_| ExtentError::ShuttingDown)?
    }

    /// Refuses appends older than `epoch` from now on, waits until every append accepted
    /// before that is durable, and reports the extent with that length. An opener that
    /// fences every reachable replica and then seals at the smallest reported length
    /// keeps every append the previous writer had acknowledged (each was accepted by
    /// every replica before its fence). The fence lives in memory: after a restart the
    /// extent's epoch is the highest one on disk again.
    pub async fn fence(&self, extent: ExtentId, epoch: Epoch) -> Result<ExtentStat, ExtentError> {
        let ext = self.get(extent)?;
        let target = {
            let mut st = ext.st.lock();
            if st.deleted {
                return Err(ExtentError::NotFound { extent });
            }
            if epoch < st.epoch {
                return Err(ExtentError::StaleEpoch { epoch, current: st.epoch });
            }
            st.epoch = epoch;
            st.limit.unwrap_or(st.accepted_len)
        };
        ext.durable(target).await?;
        Ok(ExtentStat { length: target, ..ext.stat() })
    }

    pub async fn delete(&self, extent: ExtentId) -> Result<(), ExtentError> {
        let ext = self.extents.write().remove(&extent).ok_or(ExtentError::NotFound { extent })?;
        {
            let mut st = ext.st.lock();
            st.deleted = true;
            let fired = ext.publish(&mut st);
            drop(st);
            fire(fired);
        }
        let (reply, rx) = oneshot::channel();
        self.devices[ext.device as usize].send(DeviceOp::Delete { ext, reply })?;
        rx.await.map_err(|_| ExtentError::ShuttingDown)?
    }

    pub fn stat(&self, extent: ExtentId) -> Result<ExtentStat, ExtentError> {
        Ok(self.get(extent)?.stat())
    }

    pub fn list(&self) -> Vec<ExtentStat> {
        let mut v: Vec<ExtentStat> = self.extents.read().values().map(|e| e.stat()).collect();
        v.sort_by_key(|s| s.extent);
        v
    }

    pub fn device_stats(&self) -> Vec<DeviceStat> {
        let per_device = {
            let ex = self.extents.read();
            let mut n = vec![0u32; self.devices.len()];
            ex.values().for_each(|e| n[e.device as usize] += 1);
            n
        };
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let c = d.store.capacity();
                DeviceStat {
                    device: i as u32,
                    capacity_bytes: c.clusters_total * c.cluster_bytes,
                    used_bytes: (c.clusters_total - c.clusters_free) * c.cluster_bytes,
                    extents: per_device[i],
                }
            })
            .collect()
    }

    /// Stops the device threads after they finish what is queued.
    pub fn shutdown(&self) {
        for d in &self.devices {
            d.tx.lock().take();
        }
        for d in &self.devices {
            for t in std::mem::take(&mut *d.threads.lock()) {
                let _ = t.join();
            }
        }
    }
}

impl Drop for ExtentStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum ReadError {
    Blob(BlobError),
    Checksum(u64),
}

/// The part of `r`'s payload a read of `[offset, end)` must read and check: the whole
/// record, or for a chunked record just the chunks the range touches.
fn needed(r: &RecordLoc, offset: u64, end: u64) -> (u64, u64) {
    if r.chunks.is_none() {
        return (0, r.len as u64);
    }
    let from = offset.max(r.logical) - r.logical;
    let to = end.min(r.end()) - r.logical;
    (
        from / record::RECORD_CHUNK_BYTES * record::RECORD_CHUNK_BYTES,
        (to.div_ceil(record::RECORD_CHUNK_BYTES) * record::RECORD_CHUNK_BYTES).min(r.len as u64),
    )
}

/// Reads what the records covering `[offset, end)` need in one aligned read, checks the
/// CRC32C of every record or chunk read, and copies out the asked range.
fn read_records(
    store: &dyn BlobStore,
    blob: BlobId,
    locs: &[RecordLoc],
    offset: u64,
    end: u64,
) -> Result<Bytes, ReadError> {
    let (first, last) = (locs.first().expect("non-empty"), locs.last().expect("non-empty"));
    let span_start = align_down(first.phys + needed(first, offset, end).0, IO_UNIT_BYTES);
    let span_end = align_up(last.phys + needed(last, offset, end).1, IO_UNIT_BYTES);
    let mut buf = AlignedBuf::zeroed((span_end - span_start) as usize);
    store.read(blob, span_start, &mut buf).map_err(ReadError::Blob)?;
    let mut out = BytesMut::with_capacity((end - offset) as usize);
    for r in locs {
        let (a, b) = needed(r, offset, end);
        let at = |o: u64| (r.phys + o - span_start) as usize;
        match &r.chunks {
            None => {
                if crc32c::crc32c(&buf[at(0)..at(r.len as u64)]) != r.crc {
                    return Err(ReadError::Checksum(r.logical));
                }
            }
            Some(chunks) => {
                for c in a / record::RECORD_CHUNK_BYTES..b.div_ceil(record::RECORD_CHUNK_BYTES) {
                    let lo = c * record::RECORD_CHUNK_BYTES;
                    let hi = (lo + record::RECORD_CHUNK_BYTES).min(r.len as u64);
                    if crc32c::crc32c(&buf[at(lo)..at(hi)]) != chunks[c as usize] {
                        return Err(ReadError::Checksum(r.logical + lo));
                    }
                }
            }
        }
        let from = offset.max(r.logical) - r.logical;
        let to = end.min(r.end()) - r.logical;
        out.extend_from_slice(&buf[at(from)..at(to)]);
    }
    debug_assert_eq!(out.len() as u64, end - offset);
    Ok(out.freeze())
}
