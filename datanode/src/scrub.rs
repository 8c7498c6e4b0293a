//! Scrub (issue 15): the datanode re-reads its sealed extents in the background, at a
//! bounded rate, so that a copy rotting on disk is found without any client reading it.
//! Every read checks each record's CRC32C (`ExtentStore::read`); a copy that fails is
//! reported to the metanode as bad, and the metanode's repair replaces it from the
//! other copies and deletes this one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use client::MetaClient;
use proto::{ExtentError, NodeId};

use crate::config::MetaConfig;
use crate::extent::ExtentStore;
use crate::limits::SCRUB_SPAN_BYTES;
use crate::pace::Pacer;

/// Runs scrub passes forever (nothing when the rate is 0).
pub async fn run(store: Arc<ExtentStore>, id: NodeId, meta: MetaConfig) {
    if meta.scrub_rate == 0 {
        return;
    }
    let c = MetaClient::with_deadline(meta.addrs.clone(), Duration::from_secs(5));
    loop {
        let started = Instant::now();
        let (bytes, bad) = pass(&store, id, &c, meta.scrub_rate).await;
        tracing::info!(
            "scrub pass: {bytes} bytes of sealed extents re-read in {:.1?}, {bad} bad copies found",
            started.elapsed()
        );
        tokio::time::sleep(meta.scrub_interval.saturating_sub(started.elapsed())).await;
    }
}

/// One pass over the sealed extents there are now; returns the bytes read and the
/// copies found bad.
async fn pass(store: &ExtentStore, id: NodeId, c: &MetaClient, rate: u64) -> (u64, u64) {
    let (mut bytes, mut bad) = (0, 0);
    let pacer = Pacer::new(rate);
    for st in store.list().into_iter().filter(|s| s.sealed) {
        let mut off = 0;
        while off < st.length {
            let n = (st.length - off).min(SCRUB_SPAN_BYTES);
            pacer.take(n).await;
            match store.read(st.extent, off, n as u32).await {
                Ok(_) => {}
                Err(ExtentError::ChecksumMismatch { offset }) => {
                    bad += 1;
                    tracing::warn!("scrub: extent {} fails its CRC at offset {offset}: reporting it", st.extent);
                    let why = format!("scrub: record at offset {offset} fails its CRC32C");
                    if let Err(e) = c.report_bad(st.extent, id, &why).await {
                        // A copy the metanode no longer places here (a stray) is GC's.
                        tracing::warn!("scrub: reporting extent {} bad: {e}", st.extent);
                    }
                    break;
                }
                // Deleted meanwhile.
                Err(ExtentError::NotFound { .. }) => break,
                Err(e) => {
                    tracing::warn!("scrub: reading extent {}: {e}", st.extent);
                    break;
                }
            }
            off += n;
            bytes += n;
        }
    }
    (bytes, bad)
}
