//! GC's metrics: the cluster-wide totals of its last pass as this process saw them
//! (saved in the catalog by whichever process held the lease: every GC process
//! reports the same totals), what waits for the grace period, and this process' own
//! passes (their time, their failures).

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::{now_ms, Status};

/// What a `Gc` shares with its collector.
#[derive(Clone)]
pub struct Shown {
    pub(crate) last: Arc<Mutex<Option<Status>>>,
    pub(crate) pass_seconds: Histogram,
    pub(crate) failures: Counter,
}

impl Default for Shown {
    fn default() -> Self {
        Shown {
            last: Arc::default(),
            pass_seconds: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.01, 2.0, 16)),
            failures: Counter::default(),
        }
    }
}

pub fn collector(shown: Shown) -> Box<dyn Collector> {
    telemetry::collector("gc", move |s| encode(&shown, s))
}

fn encode(shown: &Shown, s: &mut telemetry::Scrape<'_>) -> fmt::Result {
    s.histograms(
        "strata_gc_pass",
        "Time this process' GC passes took",
        Some(Unit::Seconds),
        [(Vec::<(&str, &str)>::new(), &shown.pass_seconds)],
    )?;
    s.counter("strata_gc_pass_failures", "GC passes of this process that failed", None, shown.failures.get())?;
    let Some(st) = shown.last.lock().clone() else {
        return Ok(());
    };
    s.counter("strata_gc_passes", "GC passes, cluster-wide", None, st.passes)?;
    s.gauge(
        "strata_gc_last_pass_timestamp",
        "When the last GC pass ended, since the Unix epoch",
        Some(Unit::Seconds),
        st.last_pass_ms as f64 / 1000.0,
    )?;
    s.counter("strata_gc_extents_doomed", "Extents GC found unnamed and doomed", None, st.extents_doomed_total)?;
    s.counter(
        "strata_gc_extents_deleted",
        "Doomed extents deleted after their grace period",
        None,
        st.extents_deleted_total,
    )?;
    s.counter(
        "strata_gc_copies_deleted",
        "Copies of deleted extents removed from datanodes",
        None,
        st.copies_deleted_total,
    )?;
    s.counter("strata_gc_reclaimed", "Device bytes freed", Some(Unit::Bytes), st.bytes_reclaimed_total)?;
    s.counter("strata_gc_uploads_aborted", "Stale multipart uploads aborted", None, st.uploads_aborted_total)?;
    s.counter("strata_gc_lifecycle_deleted", "Versions deleted by lifecycle rules", None, st.lifecycle_deleted_total)?;
    s.counter("strata_gc_extents_compacted", "Sparse extents rewritten", None, st.extents_compacted_total)?;
    s.counter("strata_gc_compacted", "Bytes compaction copied", Some(Unit::Bytes), st.bytes_compacted_total)?;
    s.counter(
        "strata_gc_objects_transitioned",
        "Objects moved to another policy",
        None,
        st.objects_transitioned_total,
    )?;
    s.counter(
        "strata_gc_transitioned",
        "Bytes moved to another policy",
        Some(Unit::Bytes),
        st.bytes_transitioned_total,
    )?;
    s.gauge(
        "strata_gc_extents_pending",
        "Doomed extents waiting for their grace period",
        None,
        st.extents_pending as f64,
    )?;
    s.gauge("strata_gc_pending", "Device bytes the doomed extents hold", Some(Unit::Bytes), st.bytes_pending as f64)?;
    s.gauge(
        "strata_gc_copies_pending",
        "Copies of deleted extents still on a datanode",
        None,
        st.copies_pending as f64,
    )?;
    let oldest = st.oldest_pending_ms.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
    s.gauge("strata_gc_oldest_pending_age", "Age of the oldest doomed extent", Some(Unit::Seconds), oldest)
}
