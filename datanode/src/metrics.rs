//! The datanode's metrics. Events (appends, reads, flushes, errors) are counted where
//! they happen into `DeviceStats`, one per device, owned by the `ExtentStore`; a
//! `collector` over one or more stores (`ogw standalone` runs three) reads them, and
//! the devices' capacity, at each scrape, labelled by node and device.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use proto::NodeId;

use crate::extent::ExtentStore;

/// What happened on one device.
pub struct DeviceStats {
    pub appends: Counter,
    pub appended_bytes: Counter,
    pub reads: Counter,
    pub read_bytes: Counter,
    pub flushes: Counter,
    pub flush_seconds: Histogram,
    pub appends_per_flush: Histogram,
    /// Failed flushes and reads, and copies that failed their CRC.
    pub errors: Counter,
}

impl Default for DeviceStats {
    fn default() -> Self {
        DeviceStats {
            appends: Counter::default(),
            appended_bytes: Counter::default(),
            reads: Counter::default(),
            read_bytes: Counter::default(),
            flushes: Counter::default(),
            flush_seconds: Histogram::new(telemetry::latency_buckets()),
            appends_per_flush: Histogram::new(telemetry::count_buckets()),
            errors: Counter::default(),
        }
    }
}

impl DeviceStats {
    pub fn flushed(&self, appends: u64, bytes: u64, took: Duration) {
        self.flushes.inc();
        self.flush_seconds.observe(took.as_secs_f64());
        self.appends_per_flush.observe(appends as f64);
        self.appends.inc_by(appends);
        self.appended_bytes.inc_by(bytes);
    }
}

/// The metrics of every datanode in `stores`, read at each scrape.
pub fn collector(stores: Vec<(NodeId, Arc<ExtentStore>)>) -> Box<dyn Collector> {
    telemetry::collector("datanode", move |s| encode(&stores, s))
}

type Labels = [(&'static str, String); 2];

fn encode(stores: &[(NodeId, Arc<ExtentStore>)], s: &mut telemetry::Scrape<'_>) -> fmt::Result {
    let labels =
        |node: NodeId, device: usize| -> Labels { [("node", node.0.to_string()), ("device", device.to_string())] };
    let each = || {
        stores
            .iter()
            .flat_map(|(n, st)| st.device_metrics().iter().enumerate().map(move |(d, m)| (labels(*n, d), &**m)))
    };
    let counter =
        |s: &mut telemetry::Scrape<'_>, name: &str, help: &str, unit: Option<Unit>, f: fn(&DeviceStats) -> &Counter| {
            s.counters(name, help, unit, each().map(|(l, m)| (l, f(m).get())))
        };
    counter(s, "strata_datanode_appends", "Appends made durable", None, |m| &m.appends)?;
    counter(s, "strata_datanode_appended", "Payload bytes of appends made durable", Some(Unit::Bytes), |m| {
        &m.appended_bytes
    })?;
    counter(s, "strata_datanode_reads", "Reads served", None, |m| &m.reads)?;
    counter(s, "strata_datanode_read", "Payload bytes of reads served", Some(Unit::Bytes), |m| &m.read_bytes)?;
    counter(s, "strata_datanode_flushes", "Group-commit flushes", None, |m| &m.flushes)?;
    counter(
        s,
        "strata_datanode_device_errors",
        "Failed flushes and reads, and copies that failed their CRC",
        None,
        |m| &m.errors,
    )?;
    s.histograms(
        "strata_datanode_flush",
        "Time a group-commit flush took",
        Some(Unit::Seconds),
        each().map(|(l, m)| (l, &m.flush_seconds)),
    )?;
    s.histograms(
        "strata_datanode_appends_per_flush",
        "Appends made durable by one group-commit flush",
        None,
        each().map(|(l, m)| (l, &m.appends_per_flush)),
    )?;
    let devices: Vec<(Labels, crate::extent::DeviceView)> = stores
        .iter()
        .flat_map(|(n, st)| st.device_views().into_iter().enumerate().map(move |(d, v)| (labels(*n, d), v)))
        .collect();
    let gauge = |s: &mut telemetry::Scrape<'_>,
                 name: &str,
                 help: &str,
                 unit: Option<Unit>,
                 f: fn(&crate::extent::DeviceView) -> f64| {
        s.gauges(name, help, unit, devices.iter().map(|(l, v)| (l.clone(), f(v))))
    };
    gauge(s, "strata_datanode_device_capacity", "Device capacity", Some(Unit::Bytes), |v| v.capacity_bytes as f64)?;
    gauge(s, "strata_datanode_device_free", "Device bytes free", Some(Unit::Bytes), |v| v.free_bytes as f64)?;
    gauge(s, "strata_datanode_device_extents", "Extents on the device", None, |v| v.extents as f64)?;
    gauge(s, "strata_datanode_device_failed", "1 once a flush failed and the device refuses writes", None, |v| {
        if v.failed {
            1.0
        } else {
            0.0
        }
    })
}
