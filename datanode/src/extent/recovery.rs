//! Start-up: every blob of a device becomes an extent again. Each extent's batch chain
//! is scanned (`record::scan`), a torn final batch of an open extent is dropped, and an
//! open extent gets a new incarnation, persisted before any new write.

use std::collections::HashMap;
use std::sync::Arc;

use proto::{Epoch, ExtentId};

use super::record;
use super::state::{Extent, ExtentState};
use super::xattr;
use crate::blobstore::{BlobInfo, BlobStore};

/// Summary of what start-up recovery found.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub extents: usize,
    pub sealed: usize,
    pub torn_bytes_dropped: u64,
    pub corrupt_records: usize,
}

/// Recovers every extent on device `device` into `extents`, deletes blobs that name no
/// extent, and makes the new incarnations durable.
pub(super) fn recover_device(
    device: u32,
    store: &dyn BlobStore,
    extents: &mut HashMap<ExtentId, Arc<Extent>>,
    rec: &mut Recovery,
) -> anyhow::Result<()> {
    let blobs = store.blobs();
    let mut reported = std::time::Instant::now();
    for (n, info) in blobs.iter().enumerate() {
        if reported.elapsed().as_secs() >= 2 {
            tracing::info!("device {device}: recovered {n} of {} extents", blobs.len());
            reported = std::time::Instant::now();
        }
        let Some(id) = xattr::u64_of(info.xattrs.get(xattr::EXTENT)).map(ExtentId) else {
            tracing::warn!("device {device}: blob {:#x} has no extent id; deleting the orphan", info.id);
            store.delete_blob(info.id)?;
            continue;
        };
        if extents.contains_key(&id) {
            tracing::error!("device {device}: extent {id} is also on another device; ignoring this copy");
            continue;
        }
        let ext = recover(id, device, store, info, rec)?;
        extents.insert(id, Arc::new(ext));
    }
    store.flush()?;
    Ok(())
}

fn recover(
    id: ExtentId,
    device: u32,
    store: &dyn BlobStore,
    info: &BlobInfo,
    rec: &mut Recovery,
) -> anyhow::Result<Extent> {
    let epoch = Epoch(
        xattr::u64_of(info.xattrs.get(xattr::EPOCH))
            .unwrap_or(0)
            .max(xattr::u64_of(info.xattrs.get(xattr::FENCE)).unwrap_or(0)),
    );
    let sealed = xattr::u64_of(info.xattrs.get(xattr::SEALED));
    let incarnation = xattr::u32_of(info.xattrs.get(xattr::INCARNATION)).unwrap_or(xattr::INCARNATION_FIRST);
    let blob_bytes = info.clusters * store.cluster_bytes();
    let scan = record::scan(
        |off, buf| store.read(info.id, off, buf).map_err(std::io::Error::other),
        info.id,
        blob_bytes,
        sealed,
    )?;
    if !scan.corrupt.is_empty() {
        tracing::error!("extent {id}: {} records fail their checksum; reads of them will fail", scan.corrupt.len());
    }
    if scan.dropped_bytes > 0 {
        tracing::warn!("extent {id}: dropped a torn final write of {} bytes", scan.dropped_bytes);
    }
    if scan.cut {
        tracing::error!(
            "extent {id}: its chain stops at {} bytes but a later batch lies beyond: this copy lost bytes its writer \
             may have acknowledged; the stream's next opener will not seal at its length",
            scan.length
        );
    }
    if let Some(l) = sealed.filter(|&l| scan.length < l) {
        tracing::error!("extent {id}: sealed at {l} but only {} bytes are intact here", scan.length);
    }
    rec.torn_bytes_dropped += scan.dropped_bytes;
    rec.corrupt_records += scan.corrupt.len();
    // A new incarnation for every restart of an open extent, persisted before any
    // new write, so stale bytes beyond the recovered end can never join the chain.
    let incarnation = incarnation.max(scan.incarnation_max) + 1;
    if sealed.is_none() {
        store.set_xattr(info.id, xattr::INCARNATION, &incarnation.to_le_bytes())?;
        store.sync_md(info.id)?;
    } else {
        rec.sealed += 1;
    }
    let st = ExtentState::recovered(epoch, incarnation, sealed, blob_bytes, scan);
    let ext = Extent::new(id, device, info.id, st);
    ext.scrubbed_ms
        .store(xattr::u64_of(info.xattrs.get(xattr::SCRUBBED)).unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    Ok(ext)
}
