//! The portable BlobStore: SPDK's blob model in Rust over one large file or raw block
//! device, opened O_DIRECT.
//!
//! On disk (`layout`, every structure a multiple of the 4 KiB io unit): two superblock
//! copies, two metadata copies per blob slot, then the clusters. Each blob owns one
//! metadata slot with two copies. A metadata write goes to the copy that does not hold
//! the newest version, with a higher sequence number and a CRC32C, so a torn metadata
//! write leaves the previous version intact. At open (`open`) the valid copy with the
//! highest sequence wins; the cluster allocator (`alloc`) is rebuilt from the live
//! blobs, and a cluster claimed twice is refused as corruption.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

use parking_lot::Mutex;

use super::io::{fdatasync, pread_exact, pwrite_all_at, IoEngine, IoEngineKind, Segment};
use super::{check_clusters, BlobError, BlobId, BlobInfo, BlobStore, BlobWrite, Capacity, Result};
use crate::align::{AlignedBuf, IO_UNIT_BYTES};

mod alloc;
mod layout;
mod open;

use alloc::{SlotState, State};
pub use layout::BLOB_CLUSTERS_MAX;
use layout::*;

/// How to open (and, where allowed, format) a portable device.
#[derive(Debug, Clone)]
pub struct PortableOptions {
    pub path: PathBuf,
    /// Size of the file to create when `path` does not exist.
    pub create_bytes: u64,
    pub cluster_bytes: u64,
    /// Format an existing file or block device that holds no Strata superblock.
    pub format_existing: bool,
    /// Write zeros over a file created here. On ext4 and XFS a fallocated but never
    /// written range is "unwritten": the first write to each piece makes the next
    /// fdatasync commit a journal transaction, which costs more than the write.
    /// Zero-filling once at creation makes every later flush a plain cache flush
    /// (PostgreSQL zero-fills WAL segments for the same reason).
    pub zero_fill: bool,
    pub engine: IoEngineKind,
}

pub struct PortableStore {
    file: File,
    geo: Geometry,
    state: Mutex<State>,
    engine: Mutex<IoEngine>,
    direct: bool,
}

impl PortableStore {
    pub fn engine_name(&self) -> &'static str {
        self.engine.lock().name()
    }

    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Writes a slot's next version to the copy that does not hold the newest one.
    fn write_md(&self, st: &mut State, id: BlobId, state: u32, md: &BlobMd) -> Result<()> {
        let s = blob_slot(id);
        let cur = st.slots[s as usize];
        let seq = cur.seq + 1;
        let copy = 1 - cur.active;
        let buf = encode_slot(seq, id, state, md)?;
        pwrite_all_at(self.fd(), &buf, self.geo.slot_copy_offset(s, copy))?;
        st.slots[s as usize] = SlotState { seq, gen: (id >> 32) as u32, active: copy };
        Ok(())
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Device segments for `len` bytes at `offset` of a blob.
    fn map(&self, st: &State, blob: BlobId, offset: u64, len: u64, out: &mut Vec<(u64, u64)>) -> Result<()> {
        let md = st.blob(blob)?;
        let size = md.clusters.len() as u64 * self.geo.cluster_bytes;
        if !offset.is_multiple_of(IO_UNIT_BYTES) || !len.is_multiple_of(IO_UNIT_BYTES) || offset + len > size {
            return Err(BlobError::BadRange { offset, len, size });
        }
        let cb = self.geo.cluster_bytes;
        let mut pos = offset;
        while pos < offset + len {
            let c = md.clusters[(pos / cb) as usize] as u64;
            let within = pos % cb;
            let n = (cb - within).min(offset + len - pos);
            let dev = self.geo.data_offset() + c * cb + within;
            match out.last_mut() {
                Some((o, l)) if *o + *l == dev => *l += n,
                _ => out.push((dev, n)),
            }
            pos += n;
        }
        Ok(())
    }
}

impl BlobStore for PortableStore {
    fn io_unit_bytes(&self) -> u64 {
        IO_UNIT_BYTES
    }

    fn cluster_bytes(&self) -> u64 {
        self.geo.cluster_bytes
    }

    fn blob_clusters_max(&self) -> u64 {
        BLOB_CLUSTERS_MAX
    }

    fn capacity(&self) -> Capacity {
        let st = self.state.lock();
        Capacity {
            cluster_bytes: self.geo.cluster_bytes,
            clusters_total: self.geo.clusters_total,
            clusters_free: st.clusters_free,
        }
    }

    fn free_slots(&self) -> Option<u64> {
        Some(self.state.lock().free_slots.len() as u64)
    }

    fn blobs(&self) -> Vec<BlobInfo> {
        let st = self.state.lock();
        let mut v: Vec<BlobInfo> = st
            .blobs
            .iter()
            .map(|(&id, md)| BlobInfo { id, clusters: md.clusters.len() as u64, xattrs: md.xattrs.clone() })
            .collect();
        v.sort_by_key(|b| b.id);
        v
    }

    fn create_blob(&self, xattrs: &[(&str, &[u8])], clusters: u64) -> Result<BlobId> {
        check_clusters(clusters, BLOB_CLUSTERS_MAX)?;
        let md =
            BlobMd { clusters: Vec::new(), xattrs: xattrs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect() };
        encode_xattrs(&md.xattrs)?;
        let mut st = self.state.lock();
        let slot = *st.free_slots.iter().next().ok_or(BlobError::NoSlots)?;
        let id = ((st.slots[slot as usize].gen as u64 + 1) << 32) | slot as u64;
        let mut md = md;
        md.clusters = st.alloc(clusters, None, self.geo.clusters_total)?;
        if let Err(e) = self.write_md(&mut st, id, STATE_LIVE, &md) {
            st.release(&md.clusters);
            return Err(e);
        }
        st.free_slots.remove(&slot);
        st.blobs.insert(id, md);
        Ok(id)
    }

    fn resize(&self, blob: BlobId, clusters: u64) -> Result<()> {
        check_clusters(clusters, BLOB_CLUSTERS_MAX)?;
        let mut st = self.state.lock();
        let mut md = st.blob(blob)?.clone();
        let have = md.clusters.len() as u64;
        if clusters <= have {
            return Ok(());
        }
        let new = st.alloc(clusters - have, md.clusters.last().copied(), self.geo.clusters_total)?;
        md.clusters.extend_from_slice(&new);
        if let Err(e) = self.write_md(&mut st, blob, STATE_LIVE, &md) {
            st.release(&new);
            return Err(e);
        }
        st.blobs.insert(blob, md);
        Ok(())
    }

    fn set_xattr(&self, blob: BlobId, name: &str, value: &[u8]) -> Result<()> {
        let mut st = self.state.lock();
        let md = st.blob_mut(blob)?;
        let mut x = md.xattrs.clone();
        x.insert(name.to_owned(), value.to_vec());
        encode_xattrs(&x)?;
        md.xattrs = x;
        Ok(())
    }

    fn sync_md(&self, blob: BlobId) -> Result<()> {
        let mut st = self.state.lock();
        let md = st.blob(blob)?.clone();
        self.write_md(&mut st, blob, STATE_LIVE, &md)
    }

    fn write_batch(&self, writes: &[BlobWrite<'_>]) -> Vec<Result<()>> {
        let mut segs = Vec::new();
        let mut owner = Vec::new();
        let mut results: Vec<Result<()>> = Vec::with_capacity(writes.len());
        {
            let st = self.state.lock();
            let mut ranges = Vec::new();
            for (i, w) in writes.iter().enumerate() {
                let mut offset = w.offset;
                let mut result = Ok(());
                for buf in &w.bufs {
                    assert_eq!(buf.as_ptr() as u64 % IO_UNIT_BYTES, 0, "unaligned write buffer");
                    ranges.clear();
                    if let Err(e) = self.map(&st, w.blob, offset, buf.len() as u64, &mut ranges) {
                        result = Err(e);
                        break;
                    }
                    let mut done = 0usize;
                    for &(dev, n) in &ranges {
                        // SAFETY: `done + n <= buf.len()` by construction of `map`.
                        let ptr = unsafe { buf.as_ptr().add(done) };
                        segs.push(Segment { offset: dev, ptr, len: n as usize });
                        owner.push(i);
                        done += n as usize;
                    }
                    offset += buf.len() as u64;
                }
                results.push(result);
            }
        }
        // SAFETY: every buffer is borrowed from `writes`, which outlives this call.
        let seg_results = unsafe { self.engine.lock().write_all(self.fd(), &segs) };
        for (i, r) in owner.into_iter().zip(seg_results) {
            if let Err(e) = r {
                if results[i].is_ok() {
                    results[i] = Err(BlobError::Io(e));
                }
            }
        }
        results
    }

    fn read(&self, blob: BlobId, offset: u64, buf: &mut AlignedBuf) -> Result<()> {
        let mut ranges = Vec::new();
        self.map(&self.state.lock(), blob, offset, buf.len() as u64, &mut ranges)?;
        let mut done = 0usize;
        for (dev, n) in ranges {
            pread_exact(self.fd(), &mut buf[done..done + n as usize], dev)?;
            done += n as usize;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        // Only deletions made before the sync are known durable after it; others may
        // be written while it runs and must wait for the next flush.
        let (clusters, slots) = {
            let mut st = self.state.lock();
            (std::mem::take(&mut st.pending_clusters), std::mem::take(&mut st.pending_slots))
        };
        if let Err(e) = fdatasync(self.fd()) {
            let mut st = self.state.lock();
            st.pending_clusters.extend_from_slice(&clusters);
            st.pending_slots.extend_from_slice(&slots);
            return Err(e.into());
        }
        let mut st = self.state.lock();
        st.release(&clusters);
        st.free_slots.extend(slots);
        Ok(())
    }

    fn delete_blob(&self, blob: BlobId) -> Result<()> {
        let mut st = self.state.lock();
        let md = st.blob(blob)?.clone();
        self.write_md(&mut st, blob, STATE_DELETED, &BlobMd::default())?;
        st.blobs.remove(&blob);
        st.pending_clusters.extend_from_slice(&md.clusters);
        st.pending_slots.push(blob_slot(blob));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
