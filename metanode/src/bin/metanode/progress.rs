//! `--wait` of `metanode repairs`, `drain` and `rebalance`: the leader's repair status
//! (`GET /v1/repairs`) polled every second until the work is done, shown as a bar with
//! what is left, the rate and an ETA (on a terminal one line redrawn, else a line every
//! few seconds).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::bail;
use client::MetaClient;
use proto::meta::RepairStatus;
use proto::NodeId;

pub enum Work {
    Repair,
    Drain(NodeId),
    Rebalance,
}

/// What is done since the watch began and what is left, in `unit`s.
struct Measure {
    done: f64,
    left: f64,
    finished: bool,
    note: String,
}

fn measure(w: &Work, r: &RepairStatus, base: &RepairStatus) -> anyhow::Result<Measure> {
    Ok(match w {
        Work::Repair => {
            let waiting_delay = r.down_ms.iter().filter(|(_, ms)| *ms < r.delay_ms).collect::<Vec<_>>();
            let note = match waiting_delay.first() {
                Some((n, ms)) => {
                    format!("; datanode {n} down {}s of the {}s repair delay", ms / 1000, r.delay_ms / 1000)
                }
                None if r.unreadable > 0 => format!("; {} extents unreadable until a datanode returns", r.unreadable),
                None => String::new(),
            };
            Measure {
                done: r.bytes_total.saturating_sub(base.bytes_total) as f64,
                left: r.waiting_bytes as f64,
                finished: r.waiting == 0 && r.in_flight.is_empty() && r.orphans == 0 && waiting_delay.is_empty(),
                note,
            }
        }
        Work::Drain(id) => {
            let Some(&(_, left)) = r.draining.iter().find(|(n, _)| n == id) else {
                bail!("datanode {id} is not draining (set it with `metanode node-state {id} draining`)");
            };
            let first = base.draining.iter().find(|(n, _)| n == id).map_or(left, |d| d.1);
            Measure {
                done: first.saturating_sub(left) as f64,
                left: left as f64,
                finished: left == 0,
                note: String::new(),
            }
        }
        Work::Rebalance => {
            let b = &r.rebalance;
            Measure {
                done: b.moved_bytes_total.saturating_sub(base.rebalance.moved_bytes_total) as f64,
                left: b.planned_bytes as f64,
                finished: b.paused || (b.planned_bytes == 0 && r.in_flight.is_empty()),
                note: format!("; spread {:.1}%", b.spread_permille as f64 / 10.0),
            }
        }
    })
}

pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// One progress line: label, bar, percent, what is left, rate, ETA.
pub fn line(label: &str, done: f64, left: f64, secs: f64, count: bool) -> String {
    let frac = if done + left > 0.0 { done / (done + left) } else { 1.0 };
    let filled = (frac * 30.0).round() as usize;
    let show = |v: f64| if count { format!("{v:.0} copies") } else { bytes(v) };
    let rate = if secs > 0.0 { done / secs } else { 0.0 };
    let eta = if left == 0.0 {
        "done".to_string()
    } else if rate > 0.0 {
        format!("ETA {}", duration(left / rate))
    } else {
        "ETA unknown".to_string()
    };
    format!(
        "{label} [{}{}] {:>3.0}%  {} left, {}/s, {eta}",
        "#".repeat(filled),
        "-".repeat(30 - filled),
        frac * 100.0,
        show(left),
        show(rate),
    )
}

/// Polls until `w` is done, drawing its progress on stderr; returns the last status.
pub async fn watch(c: &MetaClient, w: Work) -> anyhow::Result<RepairStatus> {
    let label = match &w {
        Work::Repair => "repair".to_string(),
        Work::Drain(id) => format!("drain of datanode {id}"),
        Work::Rebalance => "rebalance".to_string(),
    };
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut base = c.repairs().await?;
    let mut last_print = None::<Instant>;
    let mut failing_since = None::<Instant>;
    loop {
        // A leader change or a moment without quorum is waited out, a minute at most.
        let r = match c.repairs().await {
            Ok(r) => {
                failing_since = None;
                r
            }
            Err(e) if failing_since.get_or_insert_with(Instant::now).elapsed() < Duration::from_secs(60) => {
                tracing::debug!("repair status: {e}; asking again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        // A new leader counts from zero.
        if r.bytes_total < base.bytes_total || r.rebalance.moved_bytes_total < base.rebalance.moved_bytes_total {
            base = r.clone();
        }
        let m = measure(&w, &r, &base)?;
        let text = format!(
            "{}{}",
            line(&label, m.done, m.left, start.elapsed().as_secs_f64(), matches!(w, Work::Drain(_))),
            m.note
        );
        let mut err = std::io::stderr();
        if tty {
            let _ = write!(err, "\r{text:<110}");
        } else if m.finished || last_print.is_none_or(|t| t.elapsed() >= Duration::from_secs(3)) {
            let _ = writeln!(err, "{text}");
            last_print = Some(Instant::now());
        }
        if m.finished {
            if tty {
                let _ = writeln!(err);
            }
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_the_share_done_what_is_left_the_rate_and_an_eta() {
        let l = line("repair", 3.0 * 1048576.0, 1048576.0, 2.0, false);
        assert!(l.starts_with("repair [#######################-------]  75%"), "{l}");
        assert!(l.contains("1.0 MiB left, 1.5 MiB/s, ETA 1s"), "{l}");
        let l = line("drain of datanode 4", 0.0, 10.0, 1.0, true);
        assert!(l.contains("  0%") && l.contains("10 copies left") && l.contains("ETA unknown"), "{l}");
        assert!(line("x", 5.0, 0.0, 1.0, true).contains("100%  0 copies left, 5 copies/s, done"));
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(duration(75.0), "1m15s");
    }
}
