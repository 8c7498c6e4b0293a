//! One thread per device owns every write to it. Each loop takes everything queued
//! (up to `ROUND_BYTES_MAX`), writes one batch per touched extent plus any metadata
//! changes, issues **one** flush, and only then publishes the new durable lengths that
//! release the waiting acknowledgements. Appends that arrive during a flush form the
//! next round: that is the group commit.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use bytes::Bytes;
use proto::{Epoch, ExtentError, ExtentId};
use tokio::sync::oneshot;

use super::record::{encode_batch, BatchHeader, Pending, RecordLoc};
use super::{xattr, Extent};
use crate::align::{align_up, AlignedBuf, IO_UNIT_BYTES};
use crate::blobstore::portable::clusters_for;
use crate::blobstore::{BlobError, BlobId, BlobStore, BlobWrite};

/// Most payload bytes one round takes before it writes and flushes.
pub const ROUND_BYTES_MAX: u64 = 64 << 20;
/// Most payload bytes of one extent in one batch; the rest waits for the next round, so
/// that an extent never has two batches in flight at once.
pub const BATCH_BYTES_MAX: u64 = 16 << 20;

pub struct AppendOp {
    pub ext: Arc<Extent>,
    pub logical: u64,
    pub epoch: Epoch,
    pub crc: u32,
    pub payload: Bytes,
}

pub enum DeviceOp {
    Append(AppendOp),
    Create { extent: ExtentId, epoch: Epoch, reply: oneshot::Sender<Result<BlobId, ExtentError>> },
    Seal { ext: Arc<Extent>, length: u64, reply: oneshot::Sender<Result<(), ExtentError>> },
    Delete { ext: Arc<Extent>, reply: oneshot::Sender<Result<(), ExtentError>> },
}

impl DeviceOp {
    fn extent(&self) -> Option<ExtentId> {
        match self {
            DeviceOp::Append(a) => Some(a.ext.id),
            DeviceOp::Seal { ext, .. } | DeviceOp::Delete { ext, .. } => Some(ext.id),
            DeviceOp::Create { .. } => None,
        }
    }
}

pub fn blob_err(device: u32, e: BlobError) -> ExtentError {
    match e {
        BlobError::NoSpace | BlobError::NoSlots => ExtentError::NoSpace { device: device as u64 },
        other => ExtentError::Io(other.to_string()),
    }
}

struct Batch {
    ext: Arc<Extent>,
    appends: Vec<AppendOp>,
    bytes: u64,
}

pub fn run(device: u32, store: Arc<dyn BlobStore>, rx: Receiver<DeviceOp>) {
    let mut carry: VecDeque<DeviceOp> = VecDeque::new();
    loop {
        // Gather a round: what was carried over, then everything queued.
        if carry.is_empty() {
            match rx.recv() {
                Ok(op) => carry.push_back(op),
                Err(_) => return, // every sender is gone: shut down
            }
        }
        let mut ops: Vec<DeviceOp> = carry.drain(..).collect();
        let mut round_bytes: u64 = ops.iter().map(op_bytes).sum();
        while round_bytes < ROUND_BYTES_MAX {
            match rx.try_recv() {
                Ok(op) => {
                    round_bytes += op_bytes(&op);
                    ops.push(op);
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            }
        }
        round(device, &*store, ops, &mut carry);
    }
}

fn op_bytes(op: &DeviceOp) -> u64 {
    match op {
        DeviceOp::Append(a) => a.payload.len() as u64,
        _ => 0,
    }
}

fn round(device: u32, store: &dyn BlobStore, ops: Vec<DeviceOp>, carry: &mut VecDeque<DeviceOp>) {
    let mut batches: Vec<Batch> = Vec::new();
    let mut batch_of: HashMap<ExtentId, usize> = HashMap::new();
    let mut deferred: HashSet<ExtentId> = HashSet::new();
    let mut creates = Vec::new();
    let mut seals = Vec::new();
    let mut deletes = Vec::new();

    for op in ops {
        // Keep each extent's operations in order: once one is deferred, all later ones are.
        if op.extent().is_some_and(|e| deferred.contains(&e)) {
            carry.push_back(op);
            continue;
        }
        match op {
            DeviceOp::Append(a) => {
                let i = *batch_of.entry(a.ext.id).or_insert_with(|| {
                    batches.push(Batch { ext: a.ext.clone(), appends: Vec::new(), bytes: 0 });
                    batches.len() - 1
                });
                let b = &mut batches[i];
                if !b.appends.is_empty() && b.bytes + a.payload.len() as u64 > BATCH_BYTES_MAX {
                    deferred.insert(a.ext.id);
                    carry.push_back(DeviceOp::Append(a));
                    continue;
                }
                b.bytes += a.payload.len() as u64;
                b.appends.push(a);
            }
            DeviceOp::Create { extent, epoch, reply } => {
                let x = xattr::initial(extent, epoch);
                let attrs: Vec<(&str, &[u8])> = x.iter().map(|(k, v)| (*k, &v[..])).collect();
                match store.create_blob(&attrs, 0) {
                    Ok(blob) => creates.push((blob, reply)),
                    Err(e) => {
                        let _ = reply.send(Err(blob_err(device, e)));
                    }
                }
            }
            DeviceOp::Seal { ext, length, reply } => seals.push((ext, length, reply)),
            DeviceOp::Delete { ext, reply } => deletes.push((ext, reply)),
        }
    }

    // Build one batch image per extent.
    let mut images: Vec<(usize, AlignedBuf, Vec<RecordLoc>, u64, u64)> = Vec::new(); // (batch, image, locs, phys, new phys end)
    let mut failed: Vec<(usize, ExtentError)> = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let (phys, incarnation, blob) = {
            let st = b.ext.st.lock();
            if st.deleted || st.failed.is_some() {
                continue; // their waiters have already been told
            }
            assert_eq!(b.appends[0].logical, st.durable_len, "batches continue the durable chain");
            (st.phys_end, st.incarnation, b.ext.blob)
        };
        let records: Vec<Pending<'_>> =
            b.appends.iter().map(|a| Pending { payload: &a.payload, crc: a.crc }).collect();
        let h = BatchHeader {
            blob,
            incarnation,
            n_records: records.len() as u32,
            logical_start: b.appends[0].logical,
            payload_bytes: b.bytes,
            epoch: b.appends.iter().map(|a| a.epoch).max().expect("non-empty batch"),
        };
        let (image, locs) = encode_batch(&h, phys, &records);
        let end = phys + image.len() as u64;
        let grown = match store.blob_bytes(blob) {
            Ok(have) if have >= end => Ok(()),
            Ok(_) => store.resize(blob, clusters_for(end, store.cluster_bytes())),
            Err(e) => Err(e),
        };
        match grown {
            Ok(()) => images.push((i, image, locs, phys, end)),
            Err(e) => failed.push((i, blob_err(device, e))),
        }
    }
    let writes: Vec<BlobWrite<'_>> = images
        .iter()
        .map(|(i, image, _, phys, _)| BlobWrite { blob: batches[*i].ext.blob, offset: *phys, buf: image })
        .collect();
    let results = store.write_batch(&writes);
    drop(writes);

    let mut md_results = Vec::new();
    for (ext, length, reply) in seals {
        let r = store
            .set_xattr(ext.blob, xattr::SEALED, &length.to_le_bytes())
            .and_then(|_| store.sync_md(ext.blob))
            .map_err(|e| blob_err(device, e));
        md_results.push((ext, Some(length), reply, r));
    }
    for (ext, reply) in deletes {
        let r = store.delete_blob(ext.blob).map_err(|e| blob_err(device, e));
        md_results.push((ext, None, reply, r));
    }

    // One flush for the whole round; nothing below is published before it returns.
    let flushed = store.flush().map_err(|e| ExtentError::Io(format!("flush failed: {e}")));
    if let Err(e) = &flushed {
        tracing::error!("device {device}: {e}");
    }

    for (i, e) in failed {
        batches[i].ext.fail(e.to_string());
    }
    for ((i, _, locs, _, end), r) in images.into_iter().zip(results) {
        let ext = &batches[i].ext;
        match (&r, &flushed) {
            (Ok(()), Ok(())) => ext.made_durable(&locs, end),
            (Err(e), _) => ext.fail(e.to_string()),
            (_, Err(e)) => ext.fail(e.to_string()),
        }
    }
    for (blob, reply) in creates {
        let _ = reply.send(flushed.clone().map(|_| blob));
    }
    for (ext, sealed_at, reply, r) in md_results {
        let r = r.and(flushed.clone());
        if r.is_ok() {
            if let Some(l) = sealed_at {
                ext.sealed_durably(l);
            }
        }
        let _ = reply.send(r);
    }
}

/// Physical bytes an append can take at most if it ends up alone in its batch.
pub fn worst_case_phys(len: u64) -> u64 {
    align_up(super::record::batch_bytes(1, len), IO_UNIT_BYTES)
}
