//! Scrub (issue 15): the datanode re-reads its sealed extents in the background, at a
//! bounded rate, so that a copy rotting on disk is found without any client reading it.
//! Every read checks each record's CRC32C (`ExtentStore::read`); a copy that fails is
//! reported to the metanode as bad, and the metanode's repair replaces it from the
//! other copies and deletes this one.
//!
//! Each sealed copy records when scrub last found it intact (or when it was sealed) in
//! its `scrubbed` xattr; scrub reads the copies whose record is older than the interval,
//! least recently first, and records each it finds intact. A restart resumes where the
//! pass was: nothing is read twice within an interval, and no copy waits longer than
//! an interval plus a pass. A rebuilt copy is due at once (`ExtentStore::verify_soon`):
//! scrub is what reads it back from its device.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::MetaClient;
use proto::{ExtentError, ExtentId, NodeId};

use crate::config::MetaConfig;
use crate::extent::{xattr, ExtentStore};
use crate::limits::SCRUB_SPAN_BYTES;
use crate::pace::Pacer;

/// Runs scrub for the life of the process (nothing when the rate is 0).
pub async fn run(store: Arc<ExtentStore>, id: NodeId, meta: MetaConfig) {
    if meta.scrub_rate == 0 {
        return;
    }
    let c = MetaClient::with_deadline(meta.addrs.clone(), Duration::from_secs(5));
    let interval = meta.scrub_interval.as_millis() as u64;
    // Copies falling due within this of each other are read in one pass.
    let gather = (interval / 10).clamp(1, 60_000);
    let pacer = Pacer::new(meta.scrub_rate);
    let mut first = true;
    loop {
        let now = xattr::now_ms();
        let (due, next) = store.scrub_due(now.saturating_sub(interval));
        if first {
            let sealed = store.scrub_due(u64::MAX).0.len();
            tracing::info!("scrub: {} of {sealed} sealed copies due now", due.len());
            first = false;
        }
        if due.is_empty() {
            let wait = next.map_or(interval, |n| (n + interval).saturating_sub(now)).max(gather);
            // Or until a copy is made due now (a rebuilt one, `verify_soon`).
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = store.scrub_woken() => {}
            }
            continue;
        }
        let started = Instant::now();
        let (n, bytes, bad) = pass(&store, id, &c, &pacer, due).await;
        tracing::info!(
            "scrub pass: {bytes} bytes of {n} sealed copies re-read in {:.1?}, {bad} bad copies found",
            started.elapsed()
        );
    }
}

/// Reads each of `due` whole, and any copy `verify_soon` makes due meanwhile ahead of
/// the rest (a pass can take days on a large node); records each found intact,
/// reports each found bad. Returns the copies and bytes read and the copies found bad.
async fn pass(
    store: &ExtentStore,
    id: NodeId,
    c: &MetaClient,
    pacer: &Pacer,
    due: Vec<(ExtentId, u64)>,
) -> (usize, u64, u64) {
    let (mut copies, mut bytes, mut bad) = (0, 0, 0);
    let mut queue: VecDeque<(ExtentId, u64)> = due.into();
    loop {
        if let Some(urgent) = store.take_urgent_scrubs() {
            let first: HashSet<ExtentId> = urgent.iter().map(|u| u.0).collect();
            queue.retain(|d| !first.contains(&d.0));
            for u in urgent.into_iter().rev() {
                queue.push_front(u);
            }
        }
        let Some((extent, length)) = queue.pop_front() else { break };
        copies += 1;
        let mut off = 0;
        let mut intact = true;
        while off < length {
            let n = (length - off).min(SCRUB_SPAN_BYTES);
            pacer.take(n).await;
            match store.read(extent, off, n as u32).await {
                Ok(_) => {}
                // Deleted meanwhile.
                Err(ExtentError::NotFound { .. }) => {
                    intact = false;
                    break;
                }
                // A record failing its CRC, or bytes below the sealed length this copy
                // cannot serve.
                Err(e) => {
                    bad += 1;
                    intact = false;
                    tracing::warn!("scrub: extent {extent} at offset {off}: {e}: reporting it");
                    let why = format!("scrub: reading {n} bytes at offset {off}: {e}");
                    if let Err(e) = c.report_bad(extent, id, &why).await {
                        // A copy the metanode no longer places here (a stray) is GC's.
                        tracing::warn!("scrub: reporting extent {extent} bad: {e}");
                    }
                    // Not again before an interval has passed (nor recorded as intact).
                    store.defer_scrub(extent, xattr::now_ms());
                    break;
                }
            }
            off += n;
            bytes += n;
        }
        if intact {
            if let Err(e) = store.mark_scrubbed(extent, xattr::now_ms()).await {
                tracing::debug!("scrub: recording extent {extent} intact: {e}");
            }
        }
    }
    (copies, bytes, bad)
}
