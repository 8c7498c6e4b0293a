//! The writer thread of one device: each round takes what is queued, creates blobs,
//! encodes one batch per extent (continuing where its previous batch was written,
//! growing the blob when needed), writes all batches at once, then the seals' and
//! deletes' metadata, and hands the round to the flusher.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use proto::{Epoch, ExtentError, ExtentId};

use super::super::record::{self, BatchHeader, Pending, RecordLoc};
use super::super::{xattr, Extent};
use super::{blob_err, grow_to, AppendOp, DeviceOp, MetadataChange, Poison, Reply, Written};
use crate::align::{AlignedBuf, BufPool};
use crate::blobstore::{clusters_for, BlobError, BlobId, BlobStore, BlobWrite};
use crate::limits::{BATCH_BYTES_MAX, ROUND_BYTES_MAX};

/// What the writer keeps between rounds.
pub(super) struct Writer<'a> {
    pub(super) device: u32,
    pub(super) store: &'a dyn BlobStore,
    /// Operations left for the next round, in order (an extent's batch was full).
    pub(super) carry: VecDeque<DeviceOp>,
    pub(super) pool: BufPool,
}

/// One round's operations, sorted by kind.
#[derive(Default)]
struct Round {
    creates: Vec<(ExtentId, Epoch, Reply<BlobId>)>,
    /// At most one per extent, in the order the extents first appear.
    batches: Vec<Batch>,
    seals: Vec<(Arc<Extent>, u64, Reply<()>)>,
    deletes: Vec<(Arc<Extent>, Reply<()>)>,
    marks: Vec<(Arc<Extent>, &'static str, u64, Reply<()>)>,
}

struct Batch {
    ext: Arc<Extent>,
    appends: Vec<AppendOp>,
    bytes: u64,
}

/// A batch encoded and ready to be written at `phys..end` of its blob.
struct Encoded {
    batch: Batch,
    /// The whole packed image, or the header block of an aligned batch.
    head: AlignedBuf,
    locs: Vec<RecordLoc>,
    phys: u64,
    end: u64,
    aligned: bool,
}

impl Encoded {
    fn write(&self) -> BlobWrite<'_> {
        let mut bufs: Vec<&[u8]> = vec![&self.head[..]];
        if self.aligned {
            // The header block, then each payload as it was received.
            bufs.extend(self.batch.appends.iter().map(|a| a.payload.padded().expect("aligned batch")));
        }
        debug_assert_eq!(bufs.iter().map(|b| b.len() as u64).sum::<u64>(), self.end - self.phys);
        BlobWrite { blob: self.batch.ext.blob, offset: self.phys, bufs }
    }
}

impl Writer<'_> {
    pub(super) fn run(mut self, rx: Receiver<DeviceOp>, flush_tx: SyncSender<Written>, poison: &Poison) {
        loop {
            // Gather a round: what was carried over, then everything queued.
            if self.carry.is_empty() {
                match rx.recv() {
                    Ok(op) => self.carry.push_back(op),
                    Err(_) => return, // every sender is gone: shut down (the flusher follows)
                }
            }
            let mut ops: Vec<DeviceOp> = self.carry.drain(..).collect();
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
            let written = self.write_round(ops, poison);
            if flush_tx.send(written).is_err() {
                return;
            }
        }
    }

    fn write_round(&mut self, ops: Vec<DeviceOp>, poison: &Poison) -> Written {
        // A device whose flush failed writes nothing more: everything is refused.
        let healthy = poison.check();
        let round = self.sort(ops);
        let mut out = Written::default();
        for (extent, epoch, reply) in round.creates {
            match healthy.clone().and_then(|()| self.create(extent, epoch)) {
                Ok(blob) => out.created.push((blob, reply)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        let mut encoded = Vec::new();
        for b in round.batches {
            match &healthy {
                Ok(()) => encoded.extend(self.encode(b)),
                Err(e) => b.ext.fail(e.to_string()),
            }
        }
        self.write(encoded, &mut out);
        for (ext, length, reply) in round.seals {
            let written = healthy.clone().and_then(|()| self.seal(&ext, length));
            out.metadata.push(MetadataChange { ext, sealed_at: Some(length), reply, written });
        }
        for (ext, key, value, reply) in round.marks {
            let store = self.store;
            let written = healthy.clone().and_then(|()| {
                store
                    .set_xattr(ext.blob, key, &value.to_le_bytes())
                    .and_then(|_| store.sync_md(ext.blob))
                    .map_err(|e| self.blob_err(e))
            });
            out.metadata.push(MetadataChange { ext, sealed_at: None, reply, written });
        }
        for (ext, reply) in round.deletes {
            let written = healthy.clone().and_then(|()| self.store.delete_blob(ext.blob).map_err(|e| self.blob_err(e)));
            out.metadata.push(MetadataChange { ext, sealed_at: None, reply, written });
        }
        out
    }

    /// Sorts a round's operations by kind and builds one batch per extent, up to
    /// `BATCH_BYTES_MAX`. Keeps each extent's operations in order: once one is carried
    /// over to the next round, all later ones of that extent are.
    fn sort(&mut self, ops: Vec<DeviceOp>) -> Round {
        let mut round = Round::default();
        let mut batch_of: HashMap<ExtentId, usize> = HashMap::new();
        let mut deferred: HashSet<ExtentId> = HashSet::new();
        for op in ops {
            if op.extent().is_some_and(|e| deferred.contains(&e)) {
                self.carry.push_back(op);
                continue;
            }
            match op {
                DeviceOp::Append(a) => {
                    let i = *batch_of.entry(a.ext.id).or_insert_with(|| {
                        round.batches.push(Batch { ext: a.ext.clone(), appends: Vec::new(), bytes: 0 });
                        round.batches.len() - 1
                    });
                    let b = &mut round.batches[i];
                    if !b.appends.is_empty() && b.bytes + a.payload.len() as u64 > BATCH_BYTES_MAX {
                        deferred.insert(a.ext.id);
                        self.carry.push_back(DeviceOp::Append(a));
                        continue;
                    }
                    b.bytes += a.payload.len() as u64;
                    b.appends.push(a);
                }
                DeviceOp::Create { extent, epoch, reply } => round.creates.push((extent, epoch, reply)),
                DeviceOp::Seal { ext, length, reply } => round.seals.push((ext, length, reply)),
                DeviceOp::Delete { ext, reply } => round.deletes.push((ext, reply)),
                DeviceOp::Mark { ext, key, value, reply } => round.marks.push((ext, key, value, reply)),
            }
        }
        round
    }

    fn seal(&self, ext: &Extent, length: u64) -> Result<(), ExtentError> {
        let store = self.store;
        // Every record was checked as it arrived: scrub's first look is due an interval
        // after the seal.
        let now = xattr::now_ms();
        store
            .set_xattr(ext.blob, xattr::SEALED, &length.to_le_bytes())
            .and_then(|_| store.set_xattr(ext.blob, xattr::SCRUBBED, &now.to_le_bytes()))
            .and_then(|_| store.sync_md(ext.blob))
            .map_err(|e| self.blob_err(e))?;
        ext.scrubbed_ms.store(now, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn create(&self, extent: ExtentId, epoch: Epoch) -> Result<BlobId, ExtentError> {
        let x = xattr::initial(extent, epoch);
        let attrs: Vec<(&str, &[u8])> = x.iter().map(|(k, v)| (*k, &v[..])).collect();
        self.store.create_blob(&attrs, 0).map_err(|e| self.blob_err(e))
    }

    /// Encodes a batch where its extent's previous one ended and grows the blob to hold
    /// it; `None` if the extent is gone or failed (its waiters have been told).
    fn encode(&mut self, b: Batch) -> Option<Encoded> {
        let (phys, incarnation, have) = {
            let st = b.ext.st.lock();
            if st.deleted || st.failed.is_some() {
                return None; // their waiters have already been told
            }
            assert_eq!(b.appends[0].logical, st.written_len, "batches continue the written chain");
            (st.phys_end, st.incarnation, st.blob_bytes)
        };
        // Payloads received into aligned buffers go to the device as they are; any other
        // batch is packed into one image.
        let aligned = b.appends.iter().all(|a| a.payload.padded().is_some());
        let h = BatchHeader {
            blob: b.ext.blob,
            incarnation,
            n_records: b.appends.len() as u32,
            logical_start: b.appends[0].logical,
            payload_bytes: b.bytes,
            epoch: b.appends.iter().map(|a| a.epoch).max().expect("non-empty batch"),
            aligned,
        };
        let records: Vec<Pending<'_>> = b
            .appends
            .iter()
            .map(|a| Pending { payload: a.payload.as_slice(), crc: a.crc, chunks: a.chunks.as_ref() })
            .collect();
        let (head, locs) = record::encode(&mut self.pool, &h, phys, &records);
        let payloads: u64 =
            if aligned { b.appends.iter().map(|a| a.payload.padded().expect("aligned").len() as u64).sum() } else { 0 };
        let end = phys + head.len() as u64 + payloads;
        match self.grow(&b.ext, have, end) {
            Ok(()) => Some(Encoded { batch: b, head, locs, phys, end, aligned }),
            Err(e) => {
                self.pool.give(head);
                b.ext.fail(self.blob_err(e).to_string());
                None
            }
        }
    }

    /// Grows `ext`'s blob, holding `have` bytes, to hold `end` bytes.
    fn grow(&self, ext: &Extent, have: u64, end: u64) -> Result<(), BlobError> {
        if have >= end {
            return Ok(());
        }
        let cluster_bytes = self.store.cluster_bytes();
        let need = clusters_for(end, cluster_bytes);
        let want = grow_to(have / cluster_bytes, need, self.store.blob_clusters_max());
        // On a nearly full device, take just what this batch needs.
        let clusters = match self.store.resize(ext.blob, want) {
            Err(BlobError::NoSpace) if want > need => self.store.resize(ext.blob, need).map(|()| need),
            r => r.map(|()| want),
        }?;
        ext.st.lock().blob_bytes = clusters * cluster_bytes;
        Ok(())
    }

    /// Writes every encoded batch at once and moves each extent's written position.
    fn write(&mut self, encoded: Vec<Encoded>, out: &mut Written) {
        let writes: Vec<BlobWrite<'_>> = encoded.iter().map(Encoded::write).collect();
        let t = Instant::now();
        let results = self.store.write_batch(&writes);
        out.write_us = t.elapsed().as_micros() as u64;
        drop(writes);
        for (e, r) in encoded.into_iter().zip(results) {
            self.pool.give(e.head);
            let ext = e.batch.ext;
            match r {
                Ok(()) => {
                    let mut st = ext.st.lock();
                    st.written_len = e.locs.last().expect("non-empty batch").end();
                    st.phys_end = e.end;
                    drop(st);
                    out.appends += e.locs.len() as u64;
                    out.appended.push((ext, e.locs));
                }
                Err(err) => ext.fail(err.to_string()),
            }
        }
    }

    fn blob_err(&self, e: BlobError) -> ExtentError {
        blob_err(self.device, e)
    }
}

fn op_bytes(op: &DeviceOp) -> u64 {
    match op {
        DeviceOp::Append(a) => a.payload.len() as u64,
        _ => 0,
    }
}
