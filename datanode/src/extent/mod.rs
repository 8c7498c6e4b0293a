//! Extents on blob stores: the datanode's storage engine.
//!
//! An extent is one blob. Appends are accepted in memory in order (offset and epoch
//! checks happen under the extent's lock, so requests pipelined on one connection keep
//! their order), handed to the device thread, and acknowledged only once the device
//! thread has published a durable length that covers them.
//!
//! Here: `ExtentStore` (all extents of a node, its devices) and the operations other
//! than appends and reads (`append`, `read`); one extent's state is in `state`, start-up
//! in `recovery`, the device threads in `device`, the on-disk records in `record`.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use proto::msg::ANY_DEVICE;
use proto::{DeviceStat, Epoch, ExtentError, ExtentId, ExtentStat, APPEND_BYTES_MAX};
use tokio::sync::oneshot;

use crate::align::BufPool;
use crate::blobstore::backend::BackendConfig;
use crate::blobstore::{self, BlobStore};
use crate::metrics::DeviceStats;

mod append;
pub mod device;
mod read;
pub mod record;
mod recovery;
mod state;
pub mod xattr;

pub use append::{Append, Payload};
use device::{worst_case_phys, DeviceOp};
pub use recovery::Recovery;
use state::ExtentState;
pub use state::{Ack, Extent};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The devices and the backend that serves them.
    pub backend: BackendConfig,
    pub extent_bytes_max: u64,
    pub append_bytes_max: u32,
}

struct Device {
    store: Arc<dyn BlobStore>,
    tx: Mutex<Option<Sender<DeviceOp>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    poison: Arc<device::Poison>,
}

/// What the metrics show of a device at a scrape.
pub struct DeviceView {
    pub capacity_bytes: u64,
    pub free_bytes: u64,
    pub extents: u32,
    /// A flush failed: the device refuses writes.
    pub failed: bool,
}

impl Device {
    fn send(&self, op: DeviceOp) -> Result<(), ExtentError> {
        match &*self.tx.lock() {
            Some(tx) => tx.send(op).map_err(|_| ExtentError::ShuttingDown),
            None => Err(ExtentError::ShuttingDown),
        }
    }

    /// Sends an operation that answers through `reply` and waits for the answer.
    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, ExtentError>>) -> DeviceOp,
    ) -> Result<T, ExtentError> {
        let (reply, rx) = oneshot::channel();
        self.send(op(reply))?;
        rx.await.map_err(|_| ExtentError::ShuttingDown)?
    }
}

/// All extents of one datanode, over all its devices.
pub struct ExtentStore {
    devices: Vec<Device>,
    extents: RwLock<HashMap<ExtentId, Arc<Extent>>>,
    create_lock: tokio::sync::Mutex<()>,
    extent_bytes_max: u64,
    append_bytes_max: u32,
    pub recovery: Recovery,
    /// Per device, what happened on it (for the metrics).
    stats: Vec<Arc<DeviceStats>>,
    /// Wakes scrub for a copy that is due before its next planned pass (`verify_soon`).
    scrub_wake: tokio::sync::Notify,
    /// Set by `verify_soon`: copies are due at once, ahead of a pass under way.
    scrub_urgent: std::sync::atomic::AtomicBool,
    /// Aligned buffers for reads, reused (a fresh 4 MiB buffer costs a page fault per
    /// page and a zero fill), and lent to the answer of a read of one record.
    read_pool: Arc<Mutex<BufPool>>,
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
            recovery::recover_device(di as u32, &**store, &mut extents, &mut recovery)?;
        }
        recovery.extents = extents.len();
        let stats: Vec<Arc<DeviceStats>> = stores.iter().map(|_| Arc::default()).collect();
        let devices = stores
            .into_iter()
            .enumerate()
            .map(|(i, store)| {
                let (tx, rx) = std::sync::mpsc::channel();
                let poison = Arc::new(device::Poison::default());
                let threads = device::start(i as u32, store.clone(), rx, poison.clone(), stats[i].clone());
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
            stats,
            scrub_wake: tokio::sync::Notify::new(),
            scrub_urgent: Default::default(),
            read_pool: Arc::new(Mutex::new(BufPool::keeping(crate::limits::READ_POOL_BYTES_MAX))),
        })
    }

    fn get(&self, extent: ExtentId) -> Result<Arc<Extent>, ExtentError> {
        self.extents.read().get(&extent).cloned().ok_or(ExtentError::NotFound { extent })
    }

    fn device_of(&self, ext: &Extent) -> &Device {
        &self.devices[ext.device as usize]
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
        let blob = self.devices[device as usize].ask(|reply| DeviceOp::Create { extent, epoch, reply }).await?;
        let st = ExtentState::new(epoch, xattr::INCARNATION_FIRST);
        self.extents.write().insert(extent, Arc::new(Extent::new(extent, device, blob, st)));
        Ok(())
    }

    pub async fn seal(&self, extent: ExtentId, length: u64) -> Result<(), ExtentError> {
        let ext = self.get(extent)?;
        {
            let mut st = ext.st.lock();
            st.check_live(extent)?;
            match st.limit {
                Some(l) if l != length => return Err(ExtentError::SealConflict { requested: length, length: l }),
                Some(_) if st.sealed => return Ok(()),
                Some(_) => {} // the same seal is under way: finish it again, idempotently
                None => {
                    if length > st.accepted_len {
                        return Err(ExtentError::SealBeyondEnd { requested: length, length: st.accepted_len });
                    }
                    if let Err(boundary) = st.is_boundary(length) {
                        return Err(ExtentError::NotAppendBoundary { requested: length, boundary });
                    }
                    st.limit = Some(length);
                    ext.settle(st);
                }
            }
        }
        // The seal is persisted only after every byte below it is durable, so a sealed
        // length on disk never exceeds the data on disk.
        ext.durable(length).await?;
        self.device_of(&ext).ask(|reply| DeviceOp::Seal { ext, length, reply }).await
    }

    /// Refuses appends older than `epoch` from now on, waits until every append accepted
    /// before that is durable, and reports the extent with that length. An opener that
    /// fences every reachable replica and then seals at the smallest reported length
    /// keeps every append the previous writer had acknowledged (each was accepted by
    /// every replica before its fence). The fence's epoch is persisted before the answer,
    /// so it holds across a restart.
    pub async fn fence(&self, extent: ExtentId, epoch: Epoch) -> Result<ExtentStat, ExtentError> {
        let ext = self.get(extent)?;
        let target = {
            let mut st = ext.st.lock();
            st.check_live(extent)?;
            st.check_epoch(epoch)?;
            st.epoch = epoch;
            st.limit.unwrap_or(st.accepted_len)
        };
        ext.durable(target).await?;
        // On disk before the answer: an opener seals at the fenced lengths believing no
        // older writer can append again, a restart included.
        let e = ext.clone();
        self.device_of(&ext).ask(|reply| DeviceOp::Mark { ext: e, key: xattr::FENCE, value: epoch.0, reply }).await?;
        Ok(ExtentStat { length: target, ..ext.stat() })
    }

    pub async fn delete(&self, extent: ExtentId) -> Result<(), ExtentError> {
        let ext = self.extents.write().remove(&extent).ok_or(ExtentError::NotFound { extent })?;
        ext.deleted();
        self.device_of(&ext).ask(|reply| DeviceOp::Delete { ext, reply }).await
    }

    /// Sealed extents scrub has not found intact (nor seen sealed) since `before` (ms
    /// since the Unix epoch), least recently first, with their lengths; and when the
    /// next of the others falls due after `before`.
    pub fn scrub_due(&self, before: u64) -> (Vec<(ExtentId, u64)>, Option<u64>) {
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for e in self.extents.read().values() {
            let st = e.stat();
            if !st.sealed {
                continue;
            }
            let at = e.scrubbed_ms.load(std::sync::atomic::Ordering::Relaxed);
            if at <= before {
                due.push((at, st.extent, st.length));
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        due.sort_unstable();
        (due.into_iter().map(|(_, e, l)| (e, l)).collect(), next)
    }

    /// Puts `extent` off for an interval after `at_ms` without recording it on disk: a
    /// copy scrub found bad (repair replaces it; after a restart it is read, and
    /// reported, again).
    pub fn defer_scrub(&self, extent: ExtentId, at_ms: u64) {
        if let Ok(e) = self.get(extent) {
            e.scrubbed_ms.store(at_ms, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Records that scrub read `extent` whole and found it intact at `at_ms`.
    pub async fn mark_scrubbed(&self, extent: ExtentId, at_ms: u64) -> Result<(), ExtentError> {
        let ext = self.get(extent)?;
        let e = ext.clone();
        self.device_of(&ext).ask(|reply| DeviceOp::Mark { ext: e, key: xattr::SCRUBBED, value: at_ms, reply }).await?;
        ext.scrubbed_ms.store(at_ms, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Makes sealed `extent` due for scrub now, as a copy never read from its device,
    /// ahead of any pass under way, and wakes scrub. A rebuilt copy is checked in memory
    /// on its way to the device; scrub reads what the device kept. The mark is recorded
    /// on disk (a restart keeps the copy due); if that fails it is due in this run only,
    /// and the error says so.
    pub async fn verify_soon(&self, extent: ExtentId) -> Result<(), ExtentError> {
        let recorded = self.mark_scrubbed(extent, 0).await;
        if recorded.is_err() {
            self.defer_scrub(extent, 0);
        }
        self.scrub_urgent.store(true, std::sync::atomic::Ordering::Release);
        self.scrub_wake.notify_one();
        recorded
    }

    /// Returns once `verify_soon` has made a copy due (at once if it did since the
    /// last return).
    pub async fn scrub_woken(&self) {
        self.scrub_wake.notified().await
    }

    /// The copies `verify_soon` made due, if any was since the last call.
    pub fn take_urgent_scrubs(&self) -> Option<Vec<(ExtentId, u64)>> {
        self.scrub_urgent.swap(false, std::sync::atomic::Ordering::AcqRel).then(|| self.scrub_due(0).0)
    }

    pub fn stat(&self, extent: ExtentId) -> Result<ExtentStat, ExtentError> {
        Ok(self.get(extent)?.stat())
    }

    /// The records of `extent` below its readable length, with their CRC32Cs.
    pub fn records(&self, extent: ExtentId) -> Result<Vec<proto::RecordStat>, ExtentError> {
        let ext = self.get(extent)?;
        let st = ext.st.lock();
        st.check_live(extent)?;
        let readable = st.readable_len();
        Ok(st
            .index
            .iter()
            .take_while(|r| r.end() <= readable)
            .map(|r| proto::RecordStat { offset: r.logical, len: r.len, crc: r.crc })
            .collect())
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

    /// Each device's event counts, in device order.
    pub fn device_metrics(&self) -> &[Arc<DeviceStats>] {
        &self.stats
    }

    /// Each device's capacity, extents and health, in device order.
    pub fn device_views(&self) -> Vec<DeviceView> {
        self.device_stats()
            .into_iter()
            .zip(&self.devices)
            .map(|(s, d)| DeviceView {
                capacity_bytes: s.capacity_bytes,
                free_bytes: s.capacity_bytes - s.used_bytes,
                extents: s.extents,
                failed: d.poison.get().is_some(),
            })
            .collect()
    }

    /// Each device's metadata slots left for new extents, where its store counts them.
    pub fn free_slots(&self) -> Vec<Option<u64>> {
        self.devices.iter().map(|d| d.store.free_slots()).collect()
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
        // Nothing reaches the stores now (their threads are gone).
        for (i, d) in self.devices.iter().enumerate() {
            if let Err(e) = d.store.close() {
                tracing::error!("device {i}: closing its store: {e}");
            }
        }
    }
}

impl Drop for ExtentStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}
