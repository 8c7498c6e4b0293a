//! Appends: the checks an append passes under its extent's lock (size, CRC32C, state,
//! epoch, seal, offset, room) and its hand-over to the device writer in the caller's
//! order; retries of an append already accepted are acknowledged once it is durable.

use std::sync::Arc;

use bytes::Bytes;
use proto::{Epoch, ExtentError, ExtentId};

use super::device::{worst_case_phys, AppendOp, DeviceOp};
use super::record;
use super::state::{Ack, Extent};
use super::ExtentStore;
use crate::align::{align_up, PooledBuf, IO_UNIT_BYTES};

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

/// One append request: `payload` to go at `expected_offset` of `extent`, written by a
/// writer at `epoch`, whose CRC32C the client says is `crc`.
pub struct Append {
    pub extent: ExtentId,
    pub expected_offset: u64,
    pub epoch: Epoch,
    pub crc: u32,
    pub payload: Payload,
}

impl ExtentStore {
    /// Checks and queues an append, in the caller's order. `ack` is called exactly once,
    /// from whichever thread decides it: at once with a refusal, or later with the new
    /// end offset once the append is durable, or with why it never will be.
    pub fn submit_append(&self, append: Append, ack: Ack) {
        let extent = append.extent;
        let (ext, end) = match self.accept(append) {
            Ok(accepted) => accepted,
            Err(e) => return ack(Err(e)),
        };
        // Registering after the accept's lock was released loses nothing: progress only
        // moves forward, and `decide` sees whatever happened in between.
        let mut st = ext.st.lock();
        match st.decide(extent, end) {
            Some(r) => {
                drop(st);
                ack(r);
            }
            None => st.waiters.push_back((end, ack)),
        }
    }

    /// The checks of an append and its hand-over to the device writer; returns the
    /// extent and the append's end offset.
    fn accept(&self, append: Append) -> Result<(Arc<Extent>, u64), ExtentError> {
        let Append { extent, expected_offset, epoch, crc, payload } = append;
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
        let dev = self.device_of(&ext);
        let mut st = ext.st.lock();
        // Offsets come off the wire: an end past u64::MAX is just a wrong offset.
        let Some(end) = expected_offset.checked_add(len) else {
            return Err(ExtentError::OffsetMismatch { expected_offset, length: st.accepted_len });
        };
        st.check_live(extent)?;
        if let Some(why) = &st.failed {
            return Err(ExtentError::Failed(why.clone()));
        }
        if let Some(why) = dev.poison.get() {
            return Err(ExtentError::Failed(format!("device failed: {why}")));
        }
        st.check_epoch(epoch)?;
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
            let phys_needed = st.phys_end + st.pending_phys + phys;
            if phys_needed > dev.store.blob_bytes_max() {
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
}
