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

use std::sync::Arc;

use proto::Epoch;

use crate::align::{align_up, AlignedBuf, BufPool, IO_UNIT_BYTES};
use crate::blobstore::BlobId;
use crate::le::{u16_at, u32_at, u64_at};
use crate::limits::SCAN_WINDOW_BYTES;

const BATCH_MAGIC: u32 = 0x5842_5453; // "STBX"
const BATCH_VERSION: u16 = 1;
pub const BATCH_HEADER_BYTES: u64 = 64;
pub const DESCRIPTOR_BYTES: u64 = 8;
const HEADER_CRC_AT: usize = 60;
/// Header flag: the header block is padded to an io unit and every payload starts on an
/// io-unit boundary, padded with zeros to the next one (payloads received straight into
/// aligned buffers are written as they are, without a copy).
const FLAG_ALIGNED: u16 = 1;

/// Records longer than this carry a CRC32C per chunk of this many bytes besides the
/// whole-record one, so a read checks (and reads) only the chunks it touches.
pub const RECORD_CHUNK_BYTES: u64 = 64 << 10;

/// Per-chunk CRCs a record of `len` bytes stores (0: the whole-record CRC suffices).
pub fn chunk_count(len: u64) -> u64 {
    if len <= RECORD_CHUNK_BYTES {
        0
    } else {
        len.div_ceil(RECORD_CHUNK_BYTES)
    }
}

/// The whole-payload CRC32C and, for records longer than a chunk, the per-chunk ones, in
/// one pass (the whole CRC is combined from the chunks').
pub fn checksums(payload: &[u8]) -> (u32, Option<Arc<[u32]>>) {
    if chunk_count(payload.len() as u64) == 0 {
        return (crc32c::crc32c(payload), None);
    }
    let chunks: Arc<[u32]> = payload.chunks(RECORD_CHUNK_BYTES as usize).map(crc32c::crc32c).collect();
    let full_chunk = combine_op(RECORD_CHUNK_BYTES);
    let mut whole = chunks[0];
    for (c, part) in chunks.iter().zip(payload.chunks(RECORD_CHUNK_BYTES as usize)).skip(1) {
        let op = if part.len() as u64 == RECORD_CHUNK_BYTES { full_chunk } else { combine_op(part.len() as u64) };
        whole = mult_mod_p(op, whole) ^ c;
    }
    (whole, Some(chunks))
}

// CRC combination as in zlib 1.2.12+ (`crc32_combine_gen`/`multmodp`): crc(A ‖ B) is
// crc(A)·x^(8·len B) mod P xor crc(B), in the reflected bit order CRC32C uses. A few
// dozen shifts per chunk, where the matrix method of `crc32c::crc32c_combine` costs
// ~10 µs per call (0.6 ms for each 4 MiB append).

/// CRC32C's polynomial, reflected.
const CRC32C_POLY_REFLECTED: u32 = 0x82F6_3B78;

/// a(x)·b(x) mod P(x), reflected.
fn mult_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0u32;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ CRC32C_POLY_REFLECTED } else { b >> 1 };
    }
}

/// x^(8·len) mod P(x): the operator that appends `len` bytes' worth of shift to a CRC.
fn combine_op(len: u64) -> u32 {
    let mut power = 1u32 << 30; // x^1
    let mut op = 1u32 << 31; // x^0
                             // Square-and-multiply over the bits of 8·len.
    let mut n = len * 8;
    while n != 0 {
        if n & 1 != 0 {
            op = mult_mod_p(power, op);
        }
        power = mult_mod_p(power, power);
        n >>= 1;
    }
    op
}

/// Where one append's payload lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordLoc {
    pub logical: u64,
    /// Byte offset of the payload inside the blob.
    pub phys: u64,
    pub len: u32,
    /// CRC32C of the whole payload (what the client sent; retries are matched on it).
    pub crc: u32,
    /// CRC32C of each `RECORD_CHUNK_BYTES` chunk, for records longer than one chunk.
    pub chunks: Option<Arc<[u32]>>,
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
    pub epoch: Epoch,
    pub aligned: bool,
}

impl BatchHeader {
    /// Where a batch's first payload starts after a header block of `head` bytes: an
    /// aligned batch pads its header block to whole io units.
    fn payloads_at(&self, head: u64) -> u64 {
        if self.aligned {
            align_up(head, IO_UNIT_BYTES)
        } else {
            head
        }
    }

    /// Bytes a payload of `len` takes in the batch: an aligned batch pads each one to
    /// whole io units.
    fn payload_span(&self, len: u64) -> u64 {
        if self.aligned {
            align_up(len, IO_UNIT_BYTES)
        } else {
            len
        }
    }
}

/// Bytes of a batch's header block before its payloads (unpadded): the header, one
/// descriptor per record, then the chunk CRCs of the records that have them.
pub fn head_bytes(lens: impl Iterator<Item = u64>) -> u64 {
    lens.map(|l| DESCRIPTOR_BYTES + 4 * chunk_count(l)).sum::<u64>() + BATCH_HEADER_BYTES
}

/// One append going into a batch.
pub struct Pending<'a> {
    pub payload: &'a [u8],
    pub crc: u32,
    pub chunks: Option<&'a Arc<[u32]>>,
}

/// Builds a batch that will be written at blob offset `phys`, in a buffer from `pool`:
/// the whole image of a packed batch, or the header block of an aligned one (its
/// payloads, each padded to whole io units, follow the block on the device). Returns
/// the buffer with the records' locations.
pub fn encode(pool: &mut BufPool, h: &BatchHeader, phys: u64, records: &[Pending<'_>]) -> (AlignedBuf, Vec<RecordLoc>) {
    assert_eq!(phys % IO_UNIT_BYTES, 0);
    assert_eq!(h.n_records as usize, records.len());
    assert_eq!(h.payload_bytes, records.iter().map(|r| r.payload.len() as u64).sum::<u64>());
    let head = head_bytes(records.iter().map(|r| r.payload.len() as u64));
    let payloads_at = h.payloads_at(head);
    // A packed image holds the payloads too; an aligned block ends where they start.
    let written = if h.aligned { head } else { head + h.payload_bytes };
    let mut buf = pool.take(align_up(written, IO_UNIT_BYTES) as usize);
    // Every byte is written below except the header's reserved bytes and the padding.
    buf[..BATCH_HEADER_BYTES as usize].fill(0);
    buf[written as usize..].fill(0);
    let d = put_header(&mut buf, h, records);
    debug_assert_eq!(d as u64, head);
    let mut p = payloads_at;
    let mut logical = h.logical_start;
    let mut locs = Vec::with_capacity(records.len());
    for r in records {
        debug_assert_eq!(crc32c::crc32c(r.payload), r.crc, "crc checked before the write");
        let len = r.payload.len() as u64;
        if !h.aligned {
            buf[p as usize..(p + len) as usize].copy_from_slice(r.payload);
        }
        locs.push(RecordLoc { logical, phys: phys + p, len: len as u32, crc: r.crc, chunks: r.chunks.cloned() });
        logical += len;
        p += h.payload_span(len);
    }
    (buf, locs)
}

/// Writes the header, descriptors and chunk CRCs with the header CRC; returns where
/// they end.
fn put_header(buf: &mut [u8], h: &BatchHeader, records: &[Pending<'_>]) -> usize {
    buf[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    buf[4..6].copy_from_slice(&BATCH_VERSION.to_le_bytes());
    buf[6..8].copy_from_slice(&(if h.aligned { FLAG_ALIGNED } else { 0 }).to_le_bytes());
    buf[8..16].copy_from_slice(&h.blob.to_le_bytes());
    buf[16..20].copy_from_slice(&h.incarnation.to_le_bytes());
    buf[20..24].copy_from_slice(&h.n_records.to_le_bytes());
    buf[24..32].copy_from_slice(&h.logical_start.to_le_bytes());
    buf[32..40].copy_from_slice(&h.payload_bytes.to_le_bytes());
    buf[40..48].copy_from_slice(&h.epoch.0.to_le_bytes());
    let mut d = BATCH_HEADER_BYTES as usize;
    for r in records {
        buf[d..d + 4].copy_from_slice(&(r.payload.len() as u32).to_le_bytes());
        buf[d + 4..d + 8].copy_from_slice(&r.crc.to_le_bytes());
        d += DESCRIPTOR_BYTES as usize;
    }
    for r in records {
        let chunks = r.chunks.map_or(&[][..], |c| &c[..]);
        assert_eq!(chunks.len() as u64, chunk_count(r.payload.len() as u64), "chunk CRCs match the length");
        for c in chunks {
            buf[d..d + 4].copy_from_slice(&c.to_le_bytes());
            d += 4;
        }
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
    let flags = u16_at(b, 6);
    if u32_at(b, 0) != BATCH_MAGIC || u16_at(b, 4) != BATCH_VERSION || flags & !FLAG_ALIGNED != 0 {
        return None;
    }
    Some(BatchHeader {
        blob: u64_at(b, 8),
        incarnation: u32_at(b, 16),
        n_records: u32_at(b, 20),
        logical_start: u64_at(b, 24),
        payload_bytes: u64_at(b, 32),
        epoch: Epoch(u64_at(b, 40)),
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
    pub epoch_max: Epoch,
    pub incarnation_max: u32,
    /// Bytes of a torn final batch that were dropped.
    pub dropped_bytes: u64,
    /// The chain of an open extent stopped at a batch that does not check while a later
    /// batch of this blob lies beyond it: bytes past `length` were written here but
    /// cannot be read back (a damaged header, or writes lost out of order in a power
    /// failure), so this copy may hold less than its writer had acknowledged.
    pub cut: bool,
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

/// A batch's header block as read at some position, checked whole (magic, version,
/// sizes, CRC) but not yet against the chain it should continue.
struct Head {
    h: BatchHeader,
    /// (length, CRC32C) of each record.
    lens: Vec<(u32, u32)>,
    /// The header block's length in bytes (unpadded).
    len: u64,
    /// Each record's chunk CRCs, if it has them.
    chunks: Vec<Option<Arc<[u32]>>>,
}

impl<R: FnMut(u64, &mut AlignedBuf) -> std::io::Result<()>> Window<'_, R> {
    /// The header block at `pos` if one that checks is there.
    fn head_at(&mut self, pos: u64) -> std::io::Result<Option<Head>> {
        let blob_bytes = self.blob_bytes;
        if pos + BATCH_HEADER_BYTES > blob_bytes {
            return Ok(None);
        }
        let Some(h) = decode_header(self.get(pos, BATCH_HEADER_BYTES)?) else { return Ok(None) };
        let n = h.n_records as u64;
        let desc_end = BATCH_HEADER_BYTES + n * DESCRIPTOR_BYTES;
        if n == 0 || pos + desc_end > blob_bytes {
            return Ok(None);
        }
        let lens: Vec<(u32, u32)> = self.get(pos, desc_end)?[BATCH_HEADER_BYTES as usize..]
            .chunks_exact(DESCRIPTOR_BYTES as usize)
            .map(|d| (u32_at(d, 0), u32_at(d, 4)))
            .collect();
        let len = head_bytes(lens.iter().map(|&(l, _)| l as u64));
        if pos + len > blob_bytes {
            return Ok(None);
        }
        // The header CRC covers the header, the descriptors and the chunk CRCs.
        let head = self.get(pos, len)?;
        if u32_at(head, HEADER_CRC_AT) != header_crc(head) {
            return Ok(None);
        }
        if lens.iter().map(|&(l, _)| l as u64).sum::<u64>() != h.payload_bytes || lens.iter().any(|&(l, _)| l == 0) {
            return Ok(None);
        }
        let mut chunk_words = head[desc_end as usize..].chunks_exact(4).map(|c| u32_at(c, 0));
        let chunks = lens
            .iter()
            .map(|&(l, _)| match chunk_count(l as u64) {
                0 => None,
                k => Some(chunk_words.by_ref().take(k as usize).collect()),
            })
            .collect();
        Ok(Some(Head { h, lens, len, chunks }))
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
    while let Some(Head { h, lens, len: head_len, chunks }) = w.head_at(pos)? {
        if h.blob != blob || h.logical_start != s.length || h.incarnation < s.incarnation_max {
            break;
        }
        let payload_start = h.payloads_at(head_len);
        let total = payload_start + lens.iter().map(|&(l, _)| h.payload_span(l as u64)).sum::<u64>();
        if pos + total > blob_bytes {
            break;
        }
        let body = w.get(pos, total)?;
        let first = s.records.len();
        let mut p = payload_start;
        let mut all_ok = true;
        for ((len, crc), chunks) in lens.into_iter().zip(chunks) {
            let payload = &body[p as usize..(p + len as u64) as usize];
            let ok = match &chunks {
                Some(c) => {
                    payload.chunks(RECORD_CHUNK_BYTES as usize).zip(c.iter()).all(|(b, &c)| crc32c::crc32c(b) == c)
                }
                None => crc32c::crc32c(payload) == crc,
            };
            if !ok {
                all_ok = false;
                s.corrupt.push(s.records.len());
            }
            s.records.push(RecordLoc { logical: s.length, phys: pos + p, len, crc, chunks });
            s.length += len as u64;
            p += h.payload_span(len as u64);
        }
        s.epoch_max = s.epoch_max.max(h.epoch);
        s.incarnation_max = h.incarnation;
        last_batch = Some((pos, first, all_ok));
        pos += align_up(total, IO_UNIT_BYTES);
    }
    s.phys_end = pos;
    let chain_len = s.length;
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
    } else {
        // Where an open extent's chain stopped, a later batch of this blob that starts
        // past the chain's end means the chain was cut short, not ended: see `cut`. (A
        // batch after a torn one starts right at the chain's end; it was never
        // acknowledged either. A blob grows at most `GROW_CLUSTERS_MAX` clusters past
        // its last batch, so this reads little.)
        let mut probe = pos;
        while probe + BATCH_HEADER_BYTES <= blob_bytes {
            if let Some(later) = w.head_at(probe)? {
                if later.h.blob == blob && later.h.incarnation >= s.incarnation_max && later.h.logical_start > chain_len
                {
                    s.cut = true;
                    break;
                }
            }
            probe += IO_UNIT_BYTES;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
