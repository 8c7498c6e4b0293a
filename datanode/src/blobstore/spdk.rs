//! The `spdk` backend (feature `spdk`, issue 7): SPDK's BlobStore on bdevs through
//! `spdk-ffi`, behind the same [`BlobStore`] trait as the portable backend. One SPDK
//! environment and reactor thread per process; one blobstore per bdev (device).
//!
//! Durability follows the trait's contract: writes, metadata syncs and deletions are
//! durable once a later `flush` (a bdev FLUSH) returned. A deletion flushes at once, so
//! its clusters can never be reused by a new blob while the deletion is not durable.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use parking_lot::{MappedRwLockReadGuard, Mutex, RwLock, RwLockReadGuard};
use spdk_ffi::{Blobstore, BlobstoreOptions, EnvOptions, Reactor, SpdkError};

use super::backend::SpdkConfig;
use super::{check_clusters, BlobError, BlobId, BlobInfo, BlobStore, BlobWrite, Capacity, Result};
use crate::align::{AlignedBuf, DmaAlloc, IO_UNIT_BYTES};

/// Clusters one blob may hold (SPDK has no per-blob slot limit like the portable
/// store's; this bounds an extent at 64 GiB with 1 MiB clusters).
pub const SPDK_BLOB_CLUSTERS_MAX: u64 = 1 << 16;

fn blob_err(e: SpdkError) -> BlobError {
    match e {
        SpdkError::Call { errno, .. } if errno == libc::ENOSPC => BlobError::NoSpace,
        SpdkError::Call { call, errno } => BlobError::Io(std::io::Error::new(
            std::io::Error::from_raw_os_error(errno).kind(),
            format!("{call}: errno {errno}"),
        )),
        SpdkError::Other(m) => BlobError::Format(m),
    }
}

static REACTOR: OnceLock<Arc<Reactor>> = OnceLock::new();

/// Starts SPDK (once per process), creates the bdevs and opens a blobstore on each.
pub fn open_all(c: &SpdkConfig, format: bool) -> anyhow::Result<Vec<Arc<dyn BlobStore>>> {
    // PCI only for NVMe controllers: AIO, io_uring and malloc bdevs need none, and take
    // the extent layer's own (aligned) buffers, so no copy into DMA memory either way.
    let pci = c.json.contains("bdev_nvme_attach_controller");
    let r = match REACTOR.get() {
        Some(r) => r.clone(),
        None => {
            let opts = EnvOptions {
                name: format!("strata-datanode-{}", std::process::id()),
                no_huge: !c.hugepages,
                mem_size_mb: c.mem_mb,
                no_pci: !pci,
            };
            let r = Reactor::start(&opts).map_err(|e| anyhow::anyhow!("starting SPDK: {e}"))?;
            if pci {
                // An NVMe controller reads and writes only DMA-able memory: payloads are
                // received into it and reads land in it, so neither goes through a copy.
                crate::align::use_dma(DmaAlloc { alloc: dma_alloc, free: spdk_ffi::dma::free });
            }
            r.load_config(&c.json).map_err(|e| anyhow::anyhow!("creating the SPDK bdevs: {e}"))?;
            REACTOR.get_or_init(|| r).clone()
        }
    };
    let mut out: Vec<Arc<dyn BlobStore>> = Vec::new();
    for name in &c.bdevs {
        match open_one(&r, c, name, format || c.fresh.contains(name), !pci) {
            Ok(s) => {
                tracing::info!(
                    "device {}: SPDK bdev {name} ({} blobs, {} KiB clusters)",
                    out.len(),
                    s.blobs.lock().len(),
                    s.cluster >> 10
                );
                out.push(Arc::new(s));
            }
            Err(e) => {
                // Those opened already are unloaded cleanly before the error goes up.
                for s in &out {
                    let _ = s.close();
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

fn dma_alloc(len: usize) -> Option<std::ptr::NonNull<u8>> {
    spdk_ffi::dma::zalloc(len, IO_UNIT_BYTES as usize)
}

/// The blobstore on bdev `name`, with the file to flush when it is an AIO or io_uring bdev.
fn open_one(
    r: &Arc<Reactor>,
    c: &SpdkConfig,
    name: &str,
    format: bool,
    host_buffers: bool,
) -> anyhow::Result<SpdkStore> {
    let sync = match c.files.iter().find(|(b, _)| b == name) {
        Some((_, path)) => Some(
            std::fs::File::open(path).map_err(|e| anyhow::anyhow!("opening {} to flush it: {e}", path.display()))?,
        ),
        None => None,
    };
    let opts = BlobstoreOptions { bdev: name.to_string(), cluster_bytes: c.cluster_bytes as u32, format, host_buffers };
    let (bs, blobs) = Blobstore::open(r.clone(), &opts).map_err(|e| anyhow::anyhow!("SPDK bdev {name}: {e}"))?;
    let blobs = blobs
        .into_iter()
        .map(|b| {
            let info = BlobInfo { id: b.id, clusters: b.clusters, xattrs: b.xattrs.into_iter().collect() };
            (b.id, info)
        })
        .collect();
    let (io_unit, cluster) = (bs.io_unit_bytes(), bs.cluster_bytes());
    Ok(SpdkStore { bs: RwLock::new(Some(bs)), io_unit, cluster, sync, blobs: Mutex::new(blobs) })
}

/// Stops SPDK's reactor, if it started, once the extent store has shut down (its
/// blobstores closed, nothing in flight): process exit must not race a polling reactor,
/// whose memory DPDK's exit handlers free. The datanode calls it on every exit path.
pub fn shutdown() {
    if let Some(r) = REACTOR.get() {
        r.stop();
    }
}

pub struct SpdkStore {
    /// None once closed. Every call holds the read lock for its duration, so `close`
    /// (the write lock) waits for calls in flight and none starts after it.
    bs: RwLock<Option<Blobstore>>,
    io_unit: u64,
    cluster: u64,
    /// The file under an AIO or io_uring bdev: `flush` is its `fdatasync` (as the
    /// portable backend's), run on the calling thread while other I/O goes on. SPDK's
    /// own FLUSH on an AIO bdev is a blocking `fsync` inside a poll of the SPDK thread;
    /// its io_uring bdev has none.
    sync: Option<std::fs::File>,
    /// What the extent layer sees of each blob (kept in step with the blobstore).
    blobs: Mutex<BTreeMap<BlobId, BlobInfo>>,
}

impl SpdkStore {
    fn bs(&self) -> Result<MappedRwLockReadGuard<'_, Blobstore>> {
        RwLockReadGuard::try_map(self.bs.read(), |b| b.as_ref()).map_err(|_| {
            BlobError::Io(std::io::Error::new(std::io::ErrorKind::NotConnected, "the SPDK blobstore is closed"))
        })
    }
}

impl BlobStore for SpdkStore {
    fn io_unit_bytes(&self) -> u64 {
        self.io_unit
    }
    fn cluster_bytes(&self) -> u64 {
        self.cluster
    }
    fn blob_clusters_max(&self) -> u64 {
        SPDK_BLOB_CLUSTERS_MAX
    }
    fn capacity(&self) -> Capacity {
        let (total, free) = self.bs().map(|b| b.clusters()).unwrap_or((0, 0));
        Capacity { cluster_bytes: self.cluster, clusters_total: total, clusters_free: free }
    }
    fn blobs(&self) -> Vec<BlobInfo> {
        self.blobs.lock().values().cloned().collect()
    }
    fn create_blob(&self, xattrs: &[(&str, &[u8])], clusters: u64) -> Result<BlobId> {
        check_clusters(clusters, SPDK_BLOB_CLUSTERS_MAX)?;
        let id = self.bs()?.create_blob(xattrs, clusters).map_err(blob_err)?;
        let xattrs = xattrs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect();
        self.blobs.lock().insert(id, BlobInfo { id, clusters, xattrs });
        Ok(id)
    }
    fn resize(&self, blob: BlobId, clusters: u64) -> Result<()> {
        let have = self.blobs.lock().get(&blob).map(|b| b.clusters).ok_or(BlobError::NotFound(blob))?;
        if clusters <= have {
            return Ok(());
        }
        check_clusters(clusters, SPDK_BLOB_CLUSTERS_MAX)?;
        self.bs()?.resize(blob, clusters).map_err(blob_err)?;
        if let Some(b) = self.blobs.lock().get_mut(&blob) {
            b.clusters = clusters;
        }
        Ok(())
    }
    fn set_xattr(&self, blob: BlobId, name: &str, value: &[u8]) -> Result<()> {
        if !self.blobs.lock().contains_key(&blob) {
            return Err(BlobError::NotFound(blob));
        }
        self.bs()?.set_xattr(blob, name, value).map_err(blob_err)?;
        if let Some(b) = self.blobs.lock().get_mut(&blob) {
            b.xattrs.insert(name.to_string(), value.to_vec());
        }
        Ok(())
    }
    fn sync_md(&self, blob: BlobId) -> Result<()> {
        self.bs()?.sync_md(blob).map_err(blob_err)
    }
    fn write_batch(&self, writes: &[BlobWrite<'_>]) -> Vec<Result<()>> {
        let bs = match self.bs() {
            Ok(b) => b,
            Err(e) => {
                let m = e.to_string();
                return writes.iter().map(|_| Err(BlobError::Io(std::io::Error::other(m.clone())))).collect();
            }
        };
        let cluster = self.cluster;
        let sizes: Vec<Option<u64>> = {
            let blobs = self.blobs.lock();
            writes.iter().map(|w| blobs.get(&w.blob).map(|b| b.clusters * cluster)).collect()
        };
        let mut out: Vec<Option<Result<()>>> = (0..writes.len()).map(|_| None).collect();
        let mut batch = Vec::new();
        let mut index = Vec::new();
        for (i, w) in writes.iter().enumerate() {
            let len: u64 = w.bufs.iter().map(|b| b.len() as u64).sum();
            match sizes[i] {
                None => out[i] = Some(Err(BlobError::NotFound(w.blob))),
                Some(size) if w.offset + len > size => {
                    out[i] = Some(Err(BlobError::BadRange { offset: w.offset, len, size }))
                }
                Some(_) => {
                    batch.push((w.blob, w.offset, w.bufs.clone()));
                    index.push(i);
                }
            }
        }
        for (i, r) in index.into_iter().zip(bs.write_batch(&batch)) {
            out[i] = Some(r.map_err(blob_err));
        }
        out.into_iter().map(|r| r.expect("every write answered")).collect()
    }
    fn read(&self, blob: BlobId, offset: u64, buf: &mut AlignedBuf) -> Result<()> {
        let size = self.blobs.lock().get(&blob).map(|b| b.clusters * self.cluster);
        let size = size.ok_or(BlobError::NotFound(blob))?;
        if offset + buf.len() as u64 > size {
            return Err(BlobError::BadRange { offset, len: buf.len() as u64, size });
        }
        self.bs()?.read(blob, offset, buf).map_err(blob_err)
    }
    fn flush(&self) -> Result<()> {
        let bs = self.bs()?;
        match &self.sync {
            // Every write and metadata update completed before this call is on the
            // file (the AIO and io_uring bdevs' writes are done when they complete).
            Some(f) => f.sync_data().map_err(BlobError::Io),
            None => bs.flush().map_err(blob_err),
        }
    }
    fn delete_blob(&self, blob: BlobId) -> Result<()> {
        if self.blobs.lock().remove(&blob).is_none() {
            return Err(BlobError::NotFound(blob));
        }
        let bs = self.bs()?;
        bs.delete_blob(blob).map_err(blob_err)?;
        drop(bs);
        // Durable before its clusters can go to another blob.
        self.flush()
    }
    fn close(&self) -> Result<()> {
        match self.bs.write().take() {
            Some(bs) => bs.close().map_err(blob_err),
            None => Ok(()),
        }
    }
}
