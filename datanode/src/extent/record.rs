//! How an extent's bytes sit in its blob.
//!
//! Every group-commit round writes each touched extent's new appends as one **batch**
//! starting on an io-unit boundary, padded with zeros to the next one:
//!
//! ```text
//! | batch header (64) | n descriptors (len u32, crc32c u32) | payloads ... | zero pad |
//! ```
//!
//! The header names the blob, the writer incarnation, the batch's first logical offset,
//! its payload byte count and the highest epoch in it, and carries a CRC32C over itself
//! and the descriptors. Acknowledged bytes are never rewritten: the next batch starts
//! after the padding. Recovery walks batches from offset 0 and stops at the first one
//! that does not continue the chain (wrong magic, blob, offset, CRC, or an incarnation
//! older than the previous batch's). Within one incarnation nothing is overwritten, and
//! every restart bumps the incarnation, so leftovers of a torn write that a later write
//! only partly covered can never be taken for part of the chain.
//!
//! A payload whose CRC fails in the *last* batch of an open extent is a torn write,
//! never acknowledged (acks wait for the whole round's flush): that batch is dropped.
//! Anywhere else (an earlier batch, or a sealed extent) it is corruption: the record
//! stays in the index and reads of it fail with a checksum error.

use crate::align::{align_up, AlignedBuf, BufPool, IO_UNIT_BYTES};
use crate::blobstore::BlobId;

const BATCH_MAGIC: u32 = 0x5842_5453; // "STBX"
const BATCH_VERSION: u16 = 1;
pub const BATCH_HEADER_BYTES: u64 = 64;
pub const DESCRIPTOR_BYTES: u64 = 8;
const HEADER_CRC_AT: usize = 60;
/// Header flag: the header block is padded to an io unit and every payload starts on an
/// io-unit boundary, padded with zeros to the next one (payloads received straight into
/// aligned buffers are written as they are, without a copy).
const FLAG_ALIGNED: u16 = 1;
/// Size of the read window recovery scans with.
const SCAN_WINDOW_BYTES: u64 = 4 << 20;

/// Where one append's payload lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLoc {
    pub logical: u64,
    /// Byte offset of the payload inside the blob.
    pub phys: u64,
    pub len: u32,
    pub crc: u32,
}

impl RecordLoc {
    pub fn end(&self) -> u64 {
        self.logical + self.len as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub blob: BlobId,
    pub incarnation: u32,
    pub n_records: u32,
    pub logical_start: u64,
    pub payload_bytes: u64,
    pub epoch: u64,
    pub aligned: bool,
}

/// Bytes of an aligned batch's header block.
pub fn aligned_head_bytes(n_records: u64) -> u64 {
    align_up(BATCH_HEADER_BYTES + n_records * DESCRIPTOR_BYTES, IO_UNIT_BYTES)
}

pub fn batch_bytes(n_records: u64, payload_bytes: u64) -> u64 {
    BATCH_HEADER_BYTES + n_records * DESCRIPTOR_BYTES + payload_bytes
}

/// One append going into a batch.
pub struct Pending<'a> {
    pub payload: &'a [u8],
    pub crc: u32,
}

/// Builds a batch image in a buffer from `pool`; returns it with the records'
/// locations, given that the batch will be written at blob offset `phys`.
pub fn encode_batch(
    pool: &mut BufPool,
    h: &BatchHeader,
    phys: u64,
    records: &[Pending<'_>],
) -> (AlignedBuf, Vec<RecordLoc>) {
    assert_eq!(phys % IO_UNIT_BYTES, 0);
    assert_eq!(h.n_records as usize, records.len());
    assert_eq!(h.payload_bytes, records.iter().map(|r| r.payload.len() as u64).sum::<u64>());
    assert!(!h.aligned);
    let total = batch_bytes(records.len() as u64, h.payload_bytes);
    let mut buf = pool.take(align_up(total, IO_UNIT_BYTES) as usize);
    // Every byte is written below except the header's reserved bytes and the padding.
    buf[..BATCH_HEADER_BYTES as usize].fill(0);
    buf[total as usize..].fill(0);
    let d = put_header(&mut buf, h, records.iter().map(|r| (r.payload.len() as u32, r.crc)));
    let mut p = d;
    let mut logical = h.logical_start;
    let mut locs = Vec::with_capacity(records.len());
    for r in records {
        debug_assert_eq!(crc32c::crc32c(r.payload), r.crc, "crc checked before the write");
        buf[p..p + r.payload.len()].copy_from_slice(r.payload);
        locs.push(RecordLoc { logical, phys: phys + p as u64, len: r.payload.len() as u32, crc: r.crc });
        logical += r.payload.len() as u64;
        p += r.payload.len();
    }
    (buf, locs)
}

/// Builds the header block of an aligned batch for records `(len, crc)`; the payloads,
/// each padded to whole io units, follow it on the device. Returns the block and the
/// records' locations, given that the batch will be written at blob offset `phys`.
pub fn encode_aligned_head(
    pool: &mut BufPool,
    h: &BatchHeader,
    phys: u64,
    records: &[(u32, u32)],
) -> (AlignedBuf, Vec<RecordLoc>) {
    assert_eq!(phys % IO_UNIT_BYTES, 0);
    assert!(h.aligned);
    assert_eq!(h.n_records as usize, records.len());
    let head = aligned_head_bytes(records.len() as u64);
    let mut buf = pool.take(head as usize);
    buf.fill(0);
    put_header(&mut buf, h, records.iter().copied());
    let mut p = head;
    let mut logical = h.logical_start;
    let locs = records
        .iter()
        .map(|&(len, crc)| {
            let l = RecordLoc { logical, phys: phys + p, len, crc };
            logical += len as u64;
            p += align_up(len as u64, IO_UNIT_BYTES);
            l
        })
        .collect();
    (buf, locs)
}

/// Writes the header and descriptors with their CRC; returns where payloads may start.
fn put_header(buf: &mut [u8], h: &BatchHeader, records: impl Iterator<Item = (u32, u32)>) -> usize {
    buf[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    buf[4..6].copy_from_slice(&BATCH_VERSION.to_le_bytes());
    buf[6..8].copy_from_slice(&(if h.aligned { FLAG_ALIGNED } else { 0 }).to_le_bytes());
    buf[8..16].copy_from_slice(&h.blob.to_le_bytes());
    buf[16..20].copy_from_slice(&h.incarnation.to_le_bytes());
    buf[20..24].copy_from_slice(&h.n_records.to_le_bytes());
    buf[24..32].copy_from_slice(&h.logical_start.to_le_bytes());
    buf[32..40].copy_from_slice(&h.payload_bytes.to_le_bytes());
    buf[40..48].copy_from_slice(&h.epoch.to_le_bytes());
    let mut d = BATCH_HEADER_BYTES as usize;
    for (len, crc) in records {
        buf[d..d + 4].copy_from_slice(&len.to_le_bytes());
        buf[d + 4..d + 8].copy_from_slice(&crc.to_le_bytes());
        d += DESCRIPTOR_BYTES as usize;
    }
    let crc = header_crc(&buf[..d]);
    buf[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    d
}

fn header_crc(header_and_descriptors: &[u8]) -> u32 {
    let c = crc32c::crc32c(&header_and_descriptors[..HEADER_CRC_AT]);
    crc32c::crc32c_append(c, &header_and_descriptors[BATCH_HEADER_BYTES as usize..])
}

fn decode_header(b: &[u8]) -> Option<BatchHeader> {
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    let flags = u16::from_le_bytes([b[6], b[7]]);
    if u32_at(0) != BATCH_MAGIC || u16::from_le_bytes([b[4], b[5]]) != BATCH_VERSION || flags & !FLAG_ALIGNED != 0 {
        return None;
    }
    Some(BatchHeader {
        blob: u64_at(8),
        incarnation: u32_at(16),
        n_records: u32_at(20),
        logical_start: u64_at(24),
        payload_bytes: u64_at(32),
        epoch: u64_at(40),
        aligned: flags & FLAG_ALIGNED != 0,
    })
}

#[derive(Debug, Default)]
pub struct Scan {
    pub records: Vec<RecordLoc>,
    /// Indexes into `records` whose payload failed its CRC (kept: reads report them).
    pub corrupt: Vec<usize>,
    /// Where the next batch goes.
    pub phys_end: u64,
    pub length: u64,
    pub epoch_max: u64,
    pub incarnation_max: u32,
    /// Bytes of a torn final batch that were dropped.
    pub dropped_bytes: u64,
}

/// Reads a blob through a sliding window.
struct Window<'a, R> {
    read: &'a mut R,
    blob_bytes: u64,
    start: u64,
    buf: Option<AlignedBuf>,
}

impl<R: FnMut(u64, &mut AlignedBuf) -> std::io::Result<()>> Window<'_, R> {
    fn get(&mut self, pos: u64, len: u64) -> std::io::Result<&[u8]> {
        let covered = self.buf.as_ref().is_some_and(|b| pos >= self.start && pos + len <= self.start + b.len() as u64);
        if !covered {
            let start = pos - pos % IO_UNIT_BYTES;
            let want = align_up(pos + len, IO_UNIT_BYTES).max(start + SCAN_WINDOW_BYTES).min(self.blob_bytes);
            let mut b = AlignedBuf::zeroed((want - start) as usize);
            (self.read)(start, &mut b)?;
            self.start = start;
            self.buf = Some(b);
        }
        let b = self.buf.as_ref().expect("window loaded");
        let off = (pos - self.start) as usize;
        Ok(&b[off..off + len as usize])
    }
}

/// Walks the batch chain of one blob. `sealed` is the extent's sealed length, if any.
pub fn scan<R>(mut read: R, blob: BlobId, blob_bytes: u64, sealed: Option<u64>) -> std::io::Result<Scan>
where
    R: FnMut(u64, &mut AlignedBuf) -> std::io::Result<()>,
{
    let mut w = Window { read: &mut read, blob_bytes, start: 0, buf: None };
    let mut s = Scan::default();
    let mut pos = 0u64;
    let mut last_batch: Option<(u64, usize, bool)> = None; // (phys, first record index, all payloads ok)
    while pos + BATCH_HEADER_BYTES <= blob_bytes {
        let Some(h) = decode_header(w.get(pos, BATCH_HEADER_BYTES)?) else { break };
        let n = h.n_records as u64;
        let total = match n.checked_mul(DESCRIPTOR_BYTES).and_then(|d| batch_bytes(0, d).checked_add(h.payload_bytes)) {
            Some(t) if n > 0 && pos + t <= blob_bytes => t,
            _ => break,
        };
        if h.blob != blob || h.logical_start != s.length || h.incarnation < s.incarnation_max {
            break;
        }
        let head = w.get(pos, BATCH_HEADER_BYTES + n * DESCRIPTOR_BYTES)?;
        let stored = u32::from_le_bytes(head[HEADER_CRC_AT..HEADER_CRC_AT + 4].try_into().expect("4"));
        if stored != header_crc(head) {
            break;
        }
        let lens: Vec<(u32, u32)> = head[BATCH_HEADER_BYTES as usize..]
            .chunks_exact(DESCRIPTOR_BYTES as usize)
            .map(|d| {
                (u32::from_le_bytes(d[0..4].try_into().expect("4")), u32::from_le_bytes(d[4..8].try_into().expect("4")))
            })
            .collect();
        if lens.iter().map(|&(l, _)| l as u64).sum::<u64>() != h.payload_bytes || lens.iter().any(|&(l, _)| l == 0) {
            break;
        }
        // An aligned batch spreads the same payloads over whole io units.
        let total = if h.aligned {
            match lens
                .iter()
                .map(|&(l, _)| align_up(l as u64, IO_UNIT_BYTES))
                .sum::<u64>()
                .checked_add(aligned_head_bytes(n))
            {
                Some(t) if pos + t <= blob_bytes => t,
                _ => break,
            }
        } else {
            total
        };
        let body = w.get(pos, total)?;
        let first = s.records.len();
        let mut p = if h.aligned { aligned_head_bytes(n) } else { BATCH_HEADER_BYTES + n * DESCRIPTOR_BYTES };
        let mut all_ok = true;
        for (len, crc) in lens {
            let ok = crc32c::crc32c(&body[p as usize..(p + len as u64) as usize]) == crc;
            if !ok {
                all_ok = false;
                s.corrupt.push(s.records.len());
            }
            s.records.push(RecordLoc { logical: s.length, phys: pos + p, len, crc });
            s.length += len as u64;
            p += if h.aligned { align_up(len as u64, IO_UNIT_BYTES) } else { len as u64 };
        }
        s.epoch_max = s.epoch_max.max(h.epoch);
        s.incarnation_max = h.incarnation;
        last_batch = Some((pos, first, all_ok));
        pos += align_up(total, IO_UNIT_BYTES);
    }
    s.phys_end = pos;
    if let (Some((phys, first, false)), None) = (last_batch, sealed) {
        // A torn final write of an open extent: never acknowledged, drop it whole.
        s.dropped_bytes = s.length - s.records[first].logical;
        s.length = s.records[first].logical;
        s.records.truncate(first);
        s.corrupt.retain(|&i| i < first);
        s.phys_end = phys;
    }
    if let Some(l) = sealed {
        let keep = s.records.partition_point(|r| r.end() <= l);
        s.records.truncate(keep);
        s.corrupt.retain(|&i| i < keep);
        s.length = s.records.last().map_or(0, |r| r.end());
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
