//! Reads: bounded by the readable length (durable, and the seal), one aligned read of
//! what the records covering the range need, every record or chunk read CRC-checked,
//! and only then the asked range copied out.

use bytes::{Bytes, BytesMut};
use proto::{ExtentError, ExtentId, READ_BYTES_MAX};

use super::record::{RecordLoc, RECORD_CHUNK_BYTES};
use super::ExtentStore;
use crate::align::{align_down, align_up, AlignedBuf, IO_UNIT_BYTES};
use crate::blobstore::{BlobError, BlobId, BlobStore};

impl ExtentStore {
    pub async fn read(&self, extent: ExtentId, offset: u64, len: u32) -> Result<Bytes, ExtentError> {
        if len > READ_BYTES_MAX {
            return Err(ExtentError::ReadTooLarge { len: len as u64, limit: READ_BYTES_MAX as u64 });
        }
        let ext = self.get(extent)?;
        let end =
            offset.checked_add(len as u64).ok_or(ExtentError::OutOfRange { offset, len: len as u64, length: 0 })?;
        let locs: Vec<RecordLoc> = {
            let st = ext.st.lock();
            st.check_live(extent)?;
            let readable = st.readable_len();
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
        let store = self.device_of(&ext).store.clone();
        let blob = ext.blob;
        let stats = &self.device_metrics()[ext.device as usize];
        let read = tokio::task::spawn_blocking(move || read_records(&*store, blob, &locs, offset, end))
            .await
            .map_err(|e| ExtentError::Io(e.to_string()))?
            .map_err(|e| match e {
                ReadError::Blob(BlobError::NotFound(_)) => ExtentError::NotFound { extent },
                ReadError::Blob(e) => ExtentError::Io(e.to_string()),
                ReadError::Checksum(offset) => ExtentError::ChecksumMismatch { offset },
            });
        match &read {
            Ok(b) => {
                stats.reads.inc();
                stats.read_bytes.inc_by(b.len() as u64);
            }
            Err(ExtentError::Io(_) | ExtentError::ChecksumMismatch { .. }) => {
                stats.errors.inc();
            }
            Err(_) => {}
        }
        read
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
    let (from, to) = wanted(r, offset, end);
    (
        from / RECORD_CHUNK_BYTES * RECORD_CHUNK_BYTES,
        (to.div_ceil(RECORD_CHUNK_BYTES) * RECORD_CHUNK_BYTES).min(r.len as u64),
    )
}

/// The part of `r`'s payload that lies in `[offset, end)`, relative to the payload.
fn wanted(r: &RecordLoc, offset: u64, end: u64) -> (u64, u64) {
    (offset.max(r.logical) - r.logical, end.min(r.end()) - r.logical)
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
                for c in a / RECORD_CHUNK_BYTES..b.div_ceil(RECORD_CHUNK_BYTES) {
                    let lo = c * RECORD_CHUNK_BYTES;
                    let hi = (lo + RECORD_CHUNK_BYTES).min(r.len as u64);
                    if crc32c::crc32c(&buf[at(lo)..at(hi)]) != chunks[c as usize] {
                        return Err(ReadError::Checksum(r.logical + lo));
                    }
                }
            }
        }
        let (from, to) = wanted(r, offset, end);
        out.extend_from_slice(&buf[at(from)..at(to)]);
    }
    debug_assert_eq!(out.len() as u64, end - offset);
    Ok(out.freeze())
}
