//! The BlobStore-shaped storage interface under the extent layer.
//!
//! It mirrors SPDK's blob API (`spdk_bs_create_blob_ext`, `spdk_blob_resize`,
//! `spdk_blob_set_xattr`, `spdk_blob_sync_md`, `spdk_blob_io_write/read`,
//! `spdk_bs_delete_blob`, `spdk_bs_iter_first/next`) so that the SPDK backend (feature
//! `spdk`, crate `spdk-ffi`) fits behind the same trait as the portable one.
//!
//! Calls block; the extent layer makes them from one device thread (writes, metadata)
//! and from blocking read tasks. Durability contract: data writes, metadata syncs and
//! deletions are durable once a later [`BlobStore::flush`] has returned `Ok`. Clusters
//! of a deleted blob are not reused before that flush, so a crash can never leave two
//! live blobs claiming one cluster.

use std::collections::BTreeMap;

use crate::align::{align_up, AlignedBuf, IO_UNIT_BYTES};

pub mod backend;
pub mod io;
pub mod portable;
#[cfg(feature = "spdk")]
pub mod spdk;

pub type BlobId = u64;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no free clusters")]
    NoSpace,
    #[error("no free metadata slots")]
    NoSlots,
    #[error("blob {0:#x} not found")]
    NotFound(BlobId),
    #[error("blob would need {clusters} clusters, more than the limit {max}")]
    TooManyClusters { clusters: u64, max: u64 },
    #[error("xattrs take {bytes} bytes, more than the limit {max}")]
    XattrsTooLarge { bytes: usize, max: usize },
    #[error("I/O at {offset}+{len} is not aligned to the io unit or past the blob's end ({size})")]
    BadRange { offset: u64, len: u64, size: u64 },
    #[error("device I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Format(String),
}

pub type Result<T> = std::result::Result<T, BlobError>;

#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub id: BlobId,
    pub clusters: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// One write of a batch: `bufs`, one after another, go to byte `offset` of `blob`.
/// Every piece starts at an io-unit aligned address and is a whole number of io units
/// (as `spdk_blob_io_writev` and O_DIRECT require).
pub struct BlobWrite<'a> {
    pub blob: BlobId,
    pub offset: u64,
    pub bufs: Vec<&'a [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub cluster_bytes: u64,
    pub clusters_total: u64,
    pub clusters_free: u64,
}

pub trait BlobStore: Send + Sync + 'static {
    fn io_unit_bytes(&self) -> u64;
    fn cluster_bytes(&self) -> u64;
    /// Largest number of clusters one blob may hold.
    fn blob_clusters_max(&self) -> u64;
    /// Largest number of bytes one blob may hold.
    fn blob_bytes_max(&self) -> u64 {
        self.blob_clusters_max() * self.cluster_bytes()
    }
    fn capacity(&self) -> Capacity;
    /// Metadata slots left for new blobs, for a store with a fixed number of them
    /// (`create_blob` fails with `NoSlots` at zero); `None` when the store has no such
    /// limit of its own. The metanode places no extent on a device without a slot.
    fn free_slots(&self) -> Option<u64> {
        None
    }
    /// Every live blob, as found when the store was opened plus those created since.
    fn blobs(&self) -> Vec<BlobInfo>;
    fn create_blob(&self, xattrs: &[(&str, &[u8])], clusters: u64) -> Result<BlobId>;
    /// Grows a blob to `clusters` clusters (never shrinks) and persists its metadata.
    fn resize(&self, blob: BlobId, clusters: u64) -> Result<()>;
    /// Sets an xattr in memory; [`BlobStore::sync_md`] persists it.
    fn set_xattr(&self, blob: BlobId, name: &str, value: &[u8]) -> Result<()>;
    fn sync_md(&self, blob: BlobId) -> Result<()>;
    /// Writes all of `writes`, concurrently where the backend can; one result each.
    fn write_batch(&self, writes: &[BlobWrite<'_>]) -> Vec<Result<()>>;
    fn read(&self, blob: BlobId, offset: u64, buf: &mut AlignedBuf) -> Result<()>;
    /// Makes everything written, synced or deleted before this call durable.
    fn flush(&self) -> Result<()>;
    fn delete_blob(&self, blob: BlobId) -> Result<()>;
    /// Closes the store cleanly once nothing uses it (the extent store's shutdown):
    /// SPDK's blobstore is unloaded, so its next load needs no recovery. Later calls
    /// fail; closing again does nothing.
    fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// Rounds `bytes` up to whole clusters.
pub fn clusters_for(bytes: u64, cluster_bytes: u64) -> u64 {
    align_up(bytes, cluster_bytes) / cluster_bytes
}

/// Whether clusters of `bytes` fit the io unit: a power of two of at least one unit.
pub fn cluster_bytes_ok(bytes: u64) -> bool {
    bytes >= IO_UNIT_BYTES && bytes.is_power_of_two()
}

/// Refuses a blob of more than `max` clusters (each backend's own limit).
pub fn check_clusters(clusters: u64, max: u64) -> Result<()> {
    if clusters > max {
        return Err(BlobError::TooManyClusters { clusters, max });
    }
    Ok(())
}
