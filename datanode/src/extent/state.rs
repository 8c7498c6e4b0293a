//! One extent in memory: its state under a mutex, the progress seals and fences wait
//! on, and the decisions that answer waiting appends. Every change made under the lock
//! ends in [`Extent::settle`], which publishes it and then, with the lock released,
//! runs the acknowledgements it decided.

use std::collections::VecDeque;

use parking_lot::{Mutex, MutexGuard};
use proto::{Epoch, ExtentError, ExtentId, ExtentStat};
use tokio::sync::watch;

use super::device::worst_case_phys;
use super::record::{RecordLoc, Scan};
use crate::blobstore::BlobId;

/// Called once with an append's outcome: its end offset once durable, or why not.
pub type Ack = Box<dyn FnOnce(Result<u64, ExtentError>) + Send>;
type Fired = Vec<(Ack, Result<u64, ExtentError>)>;

/// What a seal waits on (appends wait through `ExtentState::waiters`).
#[derive(Debug, Clone, Default)]
pub(super) struct Progress {
    durable_len: u64,
    failed: Option<String>,
    deleted: bool,
}

pub(super) struct ExtentState {
    pub(super) epoch: Epoch,
    /// Bytes accepted in order (durable or queued).
    pub(super) accepted_len: u64,
    /// Bytes written to the device (the writer thread's position), flushed or not.
    pub(super) written_len: u64,
    pub(super) durable_len: u64,
    /// Set when a seal starts: no append past it is ever acknowledged.
    pub(super) limit: Option<u64>,
    /// The seal is durable.
    pub(super) sealed: bool,
    pub(super) deleted: bool,
    pub(super) failed: Option<String>,
    pub(super) index: Vec<RecordLoc>,
    /// Accepted, not yet durable: (logical, len, crc), for retries and seal boundaries.
    pub(super) pending: VecDeque<(u64, u32, u32)>,
    /// Worst-case physical bytes the pending appends can take.
    pub(super) pending_phys: u64,
    /// Appends waiting to be acknowledged: (end offset, acknowledgement).
    pub(super) waiters: VecDeque<(u64, Ack)>,
    /// Bytes the blob holds now (kept by the writer thread).
    pub(super) blob_bytes: u64,
    pub(super) phys_end: u64,
    pub(super) incarnation: u32,
    /// Recovery found this open extent's chain cut short (`record::Scan::cut`).
    pub(super) cut: bool,
}

impl ExtentState {
    /// An open extent with nothing in it yet.
    pub(super) fn new(epoch: Epoch, incarnation: u32) -> ExtentState {
        ExtentState {
            epoch,
            accepted_len: 0,
            written_len: 0,
            durable_len: 0,
            limit: None,
            sealed: false,
            deleted: false,
            failed: None,
            index: Vec::new(),
            pending: VecDeque::new(),
            pending_phys: 0,
            waiters: VecDeque::new(),
            blob_bytes: 0,
            phys_end: 0,
            incarnation,
            cut: false,
        }
    }

    /// An extent as start-up found it: everything its batch chain holds is durable, and
    /// a sealed extent stays sealed.
    pub(super) fn recovered(
        epoch: Epoch,
        incarnation: u32,
        sealed: Option<u64>,
        blob_bytes: u64,
        scan: Scan,
    ) -> ExtentState {
        ExtentState {
            accepted_len: scan.length,
            written_len: scan.length,
            durable_len: scan.length,
            limit: sealed,
            sealed: sealed.is_some(),
            index: scan.records,
            blob_bytes,
            phys_end: scan.phys_end,
            cut: scan.cut,
            ..ExtentState::new(epoch.max(scan.epoch_max), incarnation)
        }
    }

    fn progress(&self) -> Progress {
        Progress { durable_len: self.durable_len, failed: self.failed.clone(), deleted: self.deleted }
    }

    /// Refuses an operation on a deleted extent (a request that looked it up before the
    /// delete still holds it).
    pub(super) fn check_live(&self, extent: ExtentId) -> Result<(), ExtentError> {
        if self.deleted {
            return Err(ExtentError::NotFound { extent });
        }
        Ok(())
    }

    /// Refuses a writer older than the newest one this extent has seen.
    pub(super) fn check_epoch(&self, epoch: Epoch) -> Result<(), ExtentError> {
        if epoch < self.epoch {
            return Err(ExtentError::StaleEpoch { epoch, current: self.epoch });
        }
        Ok(())
    }

    pub(super) fn readable_len(&self) -> u64 {
        self.limit.map_or(self.durable_len, |l| l.min(self.durable_len))
    }

    /// Is `offset` where some accepted append ends (or 0)? If not, the last such place
    /// below it.
    pub(super) fn is_boundary(&self, offset: u64) -> Result<(), u64> {
        if offset == 0
            || self.index.binary_search_by_key(&offset, |r| r.end()).is_ok()
            || self.pending.iter().any(|&(l, n, _)| l + n as u64 == offset)
        {
            return Ok(());
        }
        let below = self.index.partition_point(|r| r.end() <= offset);
        let mut boundary = if below == 0 { 0 } else { self.index[below - 1].end() };
        for &(l, n, _) in &self.pending {
            if l + n as u64 <= offset {
                boundary = l + n as u64;
            }
        }
        Err(boundary)
    }

    /// The answer to an append waiting for `end` to be durable, once there is one.
    pub(super) fn decide(&self, extent: ExtentId, end: u64) -> Option<Result<u64, ExtentError>> {
        if self.deleted {
            return Some(Err(ExtentError::NotFound { extent }));
        }
        if let Some(l) = self.limit.filter(|&l| end > l) {
            return Some(Err(ExtentError::Sealed { length: l }));
        }
        if self.durable_len >= end {
            return Some(Ok(end));
        }
        self.failed.as_ref().map(|why| Err(ExtentError::Failed(why.clone())))
    }
}

pub struct Extent {
    pub id: ExtentId,
    pub device: u32,
    pub blob: BlobId,
    pub(super) st: Mutex<ExtentState>,
    progress: watch::Sender<Progress>,
    /// `xattr::SCRUBBED` (0 if never).
    pub(super) scrubbed_ms: std::sync::atomic::AtomicU64,
}

impl Extent {
    pub(super) fn new(id: ExtentId, device: u32, blob: BlobId, st: ExtentState) -> Extent {
        debug_assert!(st.waiters.is_empty(), "no append waits on an extent not yet listed");
        let (progress, _) = watch::channel(st.progress());
        Extent { id, device, blob, st: Mutex::new(st), progress, scrubbed_ms: Default::default() }
    }

    /// Publishes what changed under `st`, releases the lock, then runs every
    /// acknowledgement the change decided, so none runs with the extent locked.
    pub(super) fn settle(&self, mut st: MutexGuard<'_, ExtentState>) {
        self.progress.send_replace(st.progress());
        let mut fired: Fired = Vec::new();
        let mut i = 0;
        while i < st.waiters.len() {
            match st.decide(self.id, st.waiters[i].0) {
                Some(r) => fired.push((st.waiters.swap_remove_back(i).expect("in range").1, r)),
                None => i += 1,
            }
        }
        drop(st);
        for (ack, r) in fired {
            ack(r);
        }
    }

    /// Called by the flusher after the flush that made `locs` durable.
    pub(super) fn made_durable(&self, locs: &[RecordLoc]) {
        let mut st = self.st.lock();
        for l in locs {
            let (logical, len, crc) = st.pending.pop_front().expect("durable record was pending");
            assert_eq!((logical, len, crc), (l.logical, l.len, l.crc), "records complete in order");
            assert_eq!(l.logical, st.durable_len);
            st.pending_phys -= worst_case_phys(len as u64);
            st.durable_len = l.end();
        }
        st.index.extend_from_slice(locs);
        self.settle(st);
    }

    pub(super) fn fail(&self, why: String) {
        let mut st = self.st.lock();
        if st.failed.is_none() {
            tracing::error!("extent {} failed: {why}", self.id);
            st.failed = Some(why);
            self.settle(st);
        }
    }

    pub(super) fn sealed_durably(&self, length: u64) {
        let mut st = self.st.lock();
        st.sealed = true;
        debug_assert_eq!(st.limit, Some(length));
        self.settle(st);
    }

    /// Marks the extent deleted: every append waiting on it is refused.
    pub(super) fn deleted(&self) {
        let mut st = self.st.lock();
        st.deleted = true;
        self.settle(st);
    }

    /// Waits until the first `length` bytes are durable; fails if the extent is deleted
    /// or failed first.
    pub(super) async fn durable(&self, length: u64) -> Result<(), ExtentError> {
        let mut rx = self.progress.subscribe();
        let p = rx
            .wait_for(|p| p.deleted || p.failed.is_some() || p.durable_len >= length)
            .await
            .map_err(|_| ExtentError::ShuttingDown)?
            .clone();
        if p.deleted {
            return Err(ExtentError::NotFound { extent: self.id });
        }
        if p.durable_len < length {
            return Err(ExtentError::Failed(p.failed.unwrap_or_default()));
        }
        Ok(())
    }

    pub(super) fn stat(&self) -> ExtentStat {
        let st = self.st.lock();
        ExtentStat {
            extent: self.id,
            epoch: st.epoch,
            length: st.readable_len(),
            sealed: st.sealed,
            cut: st.cut,
            device: self.device,
        }
    }
}
