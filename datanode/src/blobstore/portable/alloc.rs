//! What the portable store keeps in memory: each metadata slot's newest copy, the live
//! blobs, and the cluster allocator (a bitmap rebuilt from the live blobs at open).

use std::collections::{BTreeSet, HashMap};

use super::layout::BlobMd;
use crate::blobstore::{BlobError, BlobId, Result};

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SlotState {
    /// Highest sequence number written to either copy.
    pub(super) seq: u64,
    /// Generation of the newest blob in this slot (blob ids are `gen << 32 | slot`).
    pub(super) gen: u32,
    /// Copy (0 or 1) holding `seq`.
    pub(super) active: u8,
}

pub(super) struct State {
    pub(super) slots: Vec<SlotState>,
    pub(super) blobs: HashMap<BlobId, BlobMd>,
    pub(super) free_slots: BTreeSet<u32>,
    used: Vec<u64>,
    pub(super) clusters_free: u64,
    alloc_hint: u32,
    /// Freed by deletions; reusable after the next successful flush.
    pub(super) pending_clusters: Vec<u32>,
    pub(super) pending_slots: Vec<u32>,
}

impl State {
    /// Every slot free and every cluster unused, before the slots are read.
    pub(super) fn new(md_slots: u64, clusters_total: u64) -> State {
        State {
            slots: vec![SlotState::default(); md_slots as usize],
            blobs: HashMap::new(),
            free_slots: BTreeSet::new(),
            used: vec![0; (clusters_total as usize).div_ceil(64)],
            clusters_free: clusters_total,
            alloc_hint: 0,
            pending_clusters: Vec::new(),
            pending_slots: Vec::new(),
        }
    }

    pub(super) fn blob(&self, id: BlobId) -> Result<&BlobMd> {
        self.blobs.get(&id).ok_or(BlobError::NotFound(id))
    }

    pub(super) fn blob_mut(&mut self, id: BlobId) -> Result<&mut BlobMd> {
        self.blobs.get_mut(&id).ok_or(BlobError::NotFound(id))
    }

    /// Marks a live blob's clusters used, as found at open; `Err` names one that is out
    /// of range or already claimed.
    pub(super) fn claim(&mut self, clusters: &[u32], total: u64) -> std::result::Result<(), u32> {
        for &c in clusters {
            if c as u64 >= total || self.is_used(c) {
                return Err(c);
            }
            self.set_used(c, true);
            self.clusters_free -= 1;
        }
        Ok(())
    }

    fn is_used(&self, c: u32) -> bool {
        self.used[c as usize / 64] & (1 << (c % 64)) != 0
    }
    fn set_used(&mut self, c: u32, used: bool) {
        let w = &mut self.used[c as usize / 64];
        if used {
            *w |= 1 << (c % 64);
        } else {
            *w &= !(1 << (c % 64));
        }
    }

    /// Allocates `n` clusters, preferring the one after `near` so blobs stay contiguous.
    pub(super) fn alloc(&mut self, n: u64, near: Option<u32>, total: u64) -> Result<Vec<u32>> {
        if self.clusters_free < n {
            return Err(BlobError::NoSpace);
        }
        let mut out = Vec::with_capacity(n as usize);
        let mut next = near.map(|c| c + 1);
        for _ in 0..n {
            let c = match next.filter(|&c| (c as u64) < total && !self.is_used(c)) {
                Some(c) => c,
                None => self.find_free(total).ok_or(BlobError::NoSpace)?,
            };
            self.set_used(c, true);
            self.clusters_free -= 1;
            out.push(c);
            next = Some(c + 1);
        }
        Ok(out)
    }

    fn find_free(&mut self, total: u64) -> Option<u32> {
        let words = self.used.len();
        let start = self.alloc_hint as usize / 64;
        for i in 0..=words {
            let w = (start + i) % words;
            if self.used[w] != u64::MAX {
                let c = w as u64 * 64 + (!self.used[w]).trailing_zeros() as u64;
                if c < total {
                    self.alloc_hint = c as u32;
                    return Some(c as u32);
                }
            }
        }
        None
    }

    pub(super) fn release(&mut self, clusters: &[u32]) {
        for &c in clusters {
            debug_assert!(self.is_used(c));
            self.set_used(c, false);
            self.clusters_free += 1;
        }
    }
}
