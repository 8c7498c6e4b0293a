//! The portable store's on-disk layout: the superblock (`Geometry`) and the metadata
//! slots (a blob's clusters and xattrs), with their encodings and CRC32Cs.
//!
//! ```text
//! 0        4 KiB      8 KiB                           data_offset
//! | super A | super B | slot 0 A | slot 0 B | slot 1 A | ... | cluster 0 | cluster 1 | ...
//! ```
//!
//! A slot copy is one io unit: magic, sequence number, blob id, state, cluster count,
//! xattr length, the xattrs at `XATTR_AT`, the cluster numbers (u32) at `CLUSTERS_AT`,
//! and a CRC32C over everything before it in the last four bytes.

use std::collections::BTreeMap;

use crate::align::{AlignedBuf, IO_UNIT_BYTES};
use crate::blobstore::{cluster_bytes_ok, BlobError, BlobId, Result};
use crate::le::{u32_at, u64_at};
use crate::limits::{CLUSTER_BYTES_DEFAULT, EXTENT_BYTES_MAX_DEFAULT};

const SUPER_MAGIC: &[u8; 8] = b"STRATASB";
const SLOT_MAGIC: &[u8; 8] = b"STRBLOB1";
const FORMAT_VERSION: u32 = 1;
pub(super) const UNIT: usize = IO_UNIT_BYTES as usize;
pub(super) const MD_OFFSET: u64 = 2 * IO_UNIT_BYTES;
const CRC_AT: usize = UNIT - 4;
const XATTR_AT: usize = 40;
pub const XATTR_BYTES_MAX: usize = 512;
const CLUSTERS_AT: usize = XATTR_AT + XATTR_BYTES_MAX;
/// Clusters one blob can hold: what fits in a metadata slot.
pub const BLOB_CLUSTERS_MAX: u64 = ((CRC_AT - CLUSTERS_AT) / 4) as u64;
// With the default sizes a whole extent, written as one batch behind a header unit,
// fits one blob: the check `ExtentStore` makes of every device at open passes.
const _: () = assert!(EXTENT_BYTES_MAX_DEFAULT + IO_UNIT_BYTES <= BLOB_CLUSTERS_MAX * CLUSTER_BYTES_DEFAULT);
const SLOTS_MAX: u64 = 1 << 20;
pub(super) const STATE_LIVE: u32 = 1;
pub(super) const STATE_DELETED: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) cluster_bytes: u64,
    pub(super) device_bytes: u64,
    pub(super) md_slots: u64,
    pub(super) clusters_total: u64,
}

impl Geometry {
    pub(super) fn plan(device_bytes: u64, cluster_bytes: u64) -> Result<Geometry> {
        if !cluster_bytes_ok(cluster_bytes) {
            return Err(BlobError::Format(format!(
                "cluster size {cluster_bytes} must be a power of two of at least {IO_UNIT_BYTES}"
            )));
        }
        let usable = device_bytes.saturating_sub(MD_OFFSET);
        let md_slots = (usable / (cluster_bytes + 2 * IO_UNIT_BYTES)).min(SLOTS_MAX);
        let g = Geometry { cluster_bytes, device_bytes, md_slots, clusters_total: 0 };
        let clusters_total = device_bytes.saturating_sub(g.data_offset()) / cluster_bytes;
        if md_slots < 1 || clusters_total < 2 {
            return Err(BlobError::Format(format!(
                "device of {device_bytes} bytes is too small for clusters of {cluster_bytes} bytes"
            )));
        }
        Ok(Geometry { clusters_total, ..g })
    }

    pub(super) fn data_offset(&self) -> u64 {
        MD_OFFSET + self.md_slots * 2 * IO_UNIT_BYTES
    }

    pub(super) fn slot_copy_offset(&self, slot: u32, copy: u8) -> u64 {
        MD_OFFSET + (slot as u64 * 2 + copy as u64) * IO_UNIT_BYTES
    }

    pub(super) fn encode(&self) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(UNIT);
        b[0..8].copy_from_slice(SUPER_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(IO_UNIT_BYTES as u32).to_le_bytes());
        b[16..24].copy_from_slice(&self.cluster_bytes.to_le_bytes());
        b[24..32].copy_from_slice(&self.device_bytes.to_le_bytes());
        b[32..40].copy_from_slice(&self.md_slots.to_le_bytes());
        b[40..48].copy_from_slice(&self.clusters_total.to_le_bytes());
        put_crc(&mut b);
        b
    }

    pub(super) fn decode(b: &[u8]) -> Option<Geometry> {
        if !intact(b, SUPER_MAGIC) || u32_at(b, 8) != FORMAT_VERSION || u32_at(b, 12) as u64 != IO_UNIT_BYTES {
            return None;
        }
        Some(Geometry {
            cluster_bytes: u64_at(b, 16),
            device_bytes: u64_at(b, 24),
            md_slots: u64_at(b, 32),
            clusters_total: u64_at(b, 40),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct BlobMd {
    pub(super) clusters: Vec<u32>,
    pub(super) xattrs: BTreeMap<String, Vec<u8>>,
}

pub(super) fn blob_slot(id: BlobId) -> u32 {
    id as u32
}

pub(super) fn encode_xattrs(x: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.extend_from_slice(&(x.len() as u16).to_le_bytes());
    for (k, v) in x {
        if k.len() > 255 || v.len() > u16::MAX as usize {
            return Err(BlobError::XattrsTooLarge { bytes: k.len() + v.len(), max: XATTR_BYTES_MAX });
        }
        out.push(k.len() as u8);
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
        out.extend_from_slice(v);
    }
    if out.len() > XATTR_BYTES_MAX {
        return Err(BlobError::XattrsTooLarge { bytes: out.len(), max: XATTR_BYTES_MAX });
    }
    Ok(out)
}

fn decode_xattrs(b: &[u8]) -> Option<BTreeMap<String, Vec<u8>>> {
    let mut x = BTreeMap::new();
    let n = u16::from_le_bytes(b.get(0..2)?.try_into().ok()?);
    let mut p = 2;
    for _ in 0..n {
        let kl = *b.get(p)? as usize;
        let k = std::str::from_utf8(b.get(p + 1..p + 1 + kl)?).ok()?.to_owned();
        p += 1 + kl;
        let vl = u16::from_le_bytes(b.get(p..p + 2)?.try_into().ok()?) as usize;
        x.insert(k, b.get(p + 2..p + 2 + vl)?.to_vec());
        p += 2 + vl;
    }
    Some(x)
}

pub(super) struct SlotCopy {
    pub(super) seq: u64,
    pub(super) id: BlobId,
    pub(super) state: u32,
    pub(super) md: BlobMd,
}

/// Writes the CRC32C of everything before it into a unit's last four bytes.
fn put_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[..CRC_AT]);
    b[CRC_AT..UNIT].copy_from_slice(&crc.to_le_bytes());
}

/// Whether a unit starts with `magic` and holds the CRC32C `put_crc` wrote.
fn intact(b: &[u8], magic: &[u8; 8]) -> bool {
    &b[0..8] == magic && u32_at(b, CRC_AT) == crc32c::crc32c(&b[..CRC_AT])
}

pub(super) fn encode_slot(seq: u64, id: BlobId, state: u32, md: &BlobMd) -> Result<AlignedBuf> {
    let x = encode_xattrs(&md.xattrs)?;
    assert!(md.clusters.len() as u64 <= BLOB_CLUSTERS_MAX);
    let mut b = AlignedBuf::zeroed(UNIT);
    b[0..8].copy_from_slice(SLOT_MAGIC);
    b[8..16].copy_from_slice(&seq.to_le_bytes());
    b[16..24].copy_from_slice(&id.to_le_bytes());
    b[24..28].copy_from_slice(&state.to_le_bytes());
    b[28..32].copy_from_slice(&(md.clusters.len() as u32).to_le_bytes());
    b[32..36].copy_from_slice(&(x.len() as u32).to_le_bytes());
    b[XATTR_AT..XATTR_AT + x.len()].copy_from_slice(&x);
    for (i, c) in md.clusters.iter().enumerate() {
        b[CLUSTERS_AT + i * 4..CLUSTERS_AT + i * 4 + 4].copy_from_slice(&c.to_le_bytes());
    }
    put_crc(&mut b);
    Ok(b)
}

pub(super) fn decode_slot(b: &[u8]) -> Option<SlotCopy> {
    if !intact(b, SLOT_MAGIC) {
        return None;
    }
    let n = u32_at(b, 28) as usize;
    let xl = u32_at(b, 32) as usize;
    if n as u64 > BLOB_CLUSTERS_MAX || xl > XATTR_BYTES_MAX {
        return None;
    }
    let clusters = (0..n).map(|i| u32_at(b, CLUSTERS_AT + i * 4)).collect();
    Some(SlotCopy {
        seq: u64_at(b, 8),
        id: u64_at(b, 16),
        state: u32_at(b, 24),
        md: BlobMd { clusters, xattrs: decode_xattrs(&b[XATTR_AT..XATTR_AT + xl])? },
    })
}
