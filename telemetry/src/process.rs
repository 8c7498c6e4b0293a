//! The standard `process_*` figures every Prometheus client exports, read from
//! `/proc/self` at each scrape (Linux only; elsewhere they are left out).

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Unit;

use crate::Scrape;

#[derive(Debug)]
pub(crate) struct Process;

impl Collector for Process {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let Some(p) = read() else {
            return Ok(());
        };
        let mut s = Scrape(encoder);
        s.counter("process_cpu", "User and system CPU time spent", Some(Unit::Seconds), p.cpu_seconds)?;
        s.gauge("process_resident_memory", "Resident memory size", Some(Unit::Bytes), p.resident_bytes as f64)?;
        s.gauge("process_open_fds", "Open file descriptors", None, p.open_fds as f64)?;
        if let Some(t) = p.start_time_seconds {
            s.gauge("process_start_time", "Start time since the Unix epoch", Some(Unit::Seconds), t)?;
        }
        Ok(())
    }
}

struct Figures {
    cpu_seconds: f64,
    resident_bytes: u64,
    open_fds: u64,
    start_time_seconds: Option<f64>,
}

fn read() -> Option<Figures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted
    // from after its closing parenthesis, where field 3 (state) begins.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    // SAFETY: sysconf only reads configuration values.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let cpu_seconds = (field(14)? + field(15)?) as f64 / ticks;
    let resident_bytes = field(24)? * page.max(1) as u64;
    let open_fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count() as u64).unwrap_or(0);
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok()));
    let start_time_seconds = boot.zip(field(22)).map(|(b, t)| b as f64 + t as f64 / ticks);
    Some(Figures { cpu_seconds, resident_bytes, open_fds, start_time_seconds })
}
