//! Reads: bounded by the readable length (durable, and the seal), one aligned read of
//! what the records covering the range need into a pooled buffer, every record or chunk
//! read CRC-checked, and only then the asked range answered: lent from the buffer when
//! one record holds it and it fills most of the buffer, copied out otherwise.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use proto::{ExtentError, ExtentId, READ_BYTES_MAX};

use super::record::{RecordLoc, RECORD_CHUNK_BYTES};
use super::ExtentStore;
use crate::align::{align_down, align_up, BufPool, PooledBuf, IO_UNIT_BYTES};
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
        let pool = self.read_pool.clone();
        let read = tokio::task::spawn_blocking(move || read_records(&*store, &pool, blob, &locs, offset, end))
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
/// CRC32C of every record or chunk read, and answers the asked range: the buffer itself
/// (sliced; it goes back to the pool when the answer is dropped) when one record holds
/// the range and it is at least half the buffer, so that a small answer never holds a
/// large buffer; otherwise a copy.
fn read_records(
    store: &dyn BlobStore,
    pool: &Arc<Mutex<BufPool>>,
    blob: BlobId,
    locs: &[RecordLoc],
    offset: u64,
    end: u64,
) -> Result<Bytes, ReadError> {
    let (first, last) = (locs.first().expect("non-empty"), locs.last().expect("non-empty"));
    let span_start = align_down(first.phys + needed(first, offset, end).0, IO_UNIT_BYTES);
    let span_end = align_up(last.phys + needed(last, offset, end).1, IO_UNIT_BYTES);
    // A pooled buffer holds an earlier read's bytes: `read` fills all of it or fails.
    let mut buf = PooledBuf::take(pool, (span_end - span_start) as usize);
    store.read(blob, span_start, &mut buf).map_err(ReadError::Blob)?;
    // Where byte `o` of `r`'s payload is in the buffer.
    let at = |r: &RecordLoc, o: u64| (r.phys + o - span_start) as usize;
    for r in locs {
        let (a, b) = needed(r, offset, end);
        match &r.chunks {
            None => {
                if crc32c::crc32c(&buf[at(r, 0)..at(r, r.len as u64)]) != r.crc {
                    return Err(ReadError::Checksum(r.logical));
                }
            }
            Some(chunks) => {
                for c in a / RECORD_CHUNK_BYTES..b.div_ceil(RECORD_CHUNK_BYTES) {
                    let lo = c * RECORD_CHUNK_BYTES;
                    let hi = (lo + RECORD_CHUNK_BYTES).min(r.len as u64);
                    if crc32c::crc32c(&buf[at(r, lo)..at(r, hi)]) != chunks[c as usize] {
                        return Err(ReadError::Checksum(r.logical + lo));
                    }
                }
            }
        }
    }
    if let [r] = locs {
        let (from, to) = wanted(r, offset, end);
        if 2 * (to - from) as usize >= buf.capacity() {
            return Ok(Bytes::from_owner(buf).slice(at(r, from)..at(r, to)));
        }
    }
    let mut out = BytesMut::with_capacity((end - offset) as usize);
    for r in locs {
        let (from, to) = wanted(r, offset, end);
        out.extend_from_slice(&buf[at(r, from)..at(r, to)]);
    }
    debug_assert_eq!(out.len() as u64, end - offset);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use proto::msg::ANY_DEVICE;
    use proto::{Epoch, ExtentId};

    use crate::blobstore::io::IoEngineKind;
    use crate::blobstore::portable::{PortableOptions, PortableStore};
    use crate::blobstore::BlobStore;
    use crate::extent::append::{Append, Payload};
    use crate::extent::ExtentStore;
    use crate::limits::CLUSTER_BYTES_DEFAULT;

    /// Bytes that differ at every offset and between extents.
    fn pattern(extent: u64, len: usize) -> Vec<u8> {
        (0..len as u64).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) ^ (extent * 97)) as u8).collect()
    }

    async fn append(s: &ExtentStore, extent: u64, at: u64, payload: &[u8]) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let append = Append {
            extent: ExtentId(extent),
            expected_offset: at,
            epoch: Epoch(1),
            crc: crc32c::crc32c(payload),
            payload: Payload::Bytes(Bytes::copy_from_slice(payload)),
        };
        s.submit_append(append, Box::new(move |r| drop(tx.send(r))));
        assert_eq!(rx.await.unwrap().unwrap(), at + payload.len() as u64);
    }

    /// Reads go through reused buffers, and a large read of one record lends its buffer
    /// to the answer: every answer must hold exactly its own bytes, whatever buffer the
    /// read before left behind, and an answer still held must not change while later
    /// reads reuse buffers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_through_reused_buffers_answer_their_own_bytes_and_held_answers_stay() {
        let dir = tempfile::tempdir().unwrap();
        let opts = PortableOptions {
            path: dir.path().join("dev"),
            create_bytes: 256 << 20,
            cluster_bytes: CLUSTER_BYTES_DEFAULT,
            format_existing: false,
            zero_fill: false,
            engine: IoEngineKind::Sync,
        };
        let blob: Arc<dyn BlobStore> = Arc::new(PortableStore::open(&opts).unwrap());
        let s = ExtentStore::with_stores(vec![blob], 64 << 20, proto::APPEND_BYTES_MAX).unwrap();
        // Two extents of two records each: 1 MiB + 5 bytes, then 300,001 bytes (which
        // does not end on an io unit).
        let sizes = [(1 << 20) + 5, 300_001];
        let mut whole = Vec::new();
        for e in 1..=2u64 {
            s.create(ExtentId(e), Epoch(1), ANY_DEVICE).await.unwrap();
            let bytes = pattern(e, sizes.iter().sum());
            append(&s, e, 0, &bytes[..sizes[0]]).await;
            append(&s, e, sizes[0] as u64, &bytes[sizes[0]..]).await;
            whole.push(bytes);
        }
        let want = |e: u64, off: usize, len: usize| whole[e as usize - 1][off..off + len].to_vec();
        // A whole first record: lent from its buffer. Held through everything below.
        let held = s.read(ExtentId(1), 0, sizes[0] as u32).await.unwrap();
        assert_eq!(held, want(1, 0, sizes[0]));
        // Reads of every shape, alternating extents so that each buffer taken from the
        // pool last held the other extent's bytes: whole records, parts of one record
        // (large and small), ranges across both records, and the whole extent.
        let total = sizes[0] + sizes[1];
        let shapes = [
            (0, sizes[0]),
            (sizes[0], sizes[1]),
            (10, sizes[0] - 20),
            (4096 * 3 + 1, 100),
            (sizes[0] + 7, 1),
            (sizes[0] - 3, 10),
            (sizes[0] / 2, sizes[0] / 2 + 1000),
            (0, total),
            (total - 1, 1),
        ];
        for round in 0..3 {
            for &(off, len) in &shapes {
                for e in [2u64, 1] {
                    let got = s.read(ExtentId(e), off as u64, len as u32).await.unwrap();
                    assert!(got == want(e, off, len), "round {round}: extent {e} bytes {off}+{len}");
                }
            }
        }
        assert_eq!(held, want(1, 0, sizes[0]), "a held answer changed while its buffer's pool was busy");
        // Dropped, its buffer goes back to the pool and serves the next read.
        drop(held);
        assert_eq!(s.read(ExtentId(2), 0, sizes[0] as u32).await.unwrap(), want(2, 0, sizes[0]));
    }
}
