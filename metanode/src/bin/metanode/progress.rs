//! `--wait` of `metanode repairs`, `drain` and `rebalance`: the leader's repair status
//! (`GET /v1/repairs`) polled every second until the work is done, shown as a bar with
//! what is left, the rate and an ETA (on a terminal one line redrawn, else a line every
//! few seconds).

use std::time::{Duration, Instant};

use anyhow::bail;
use client::progress::{Bar, Unit};
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

/// Polls until `w` is done, drawing its progress on stderr; returns the last status.
pub async fn watch(c: &MetaClient, w: Work) -> anyhow::Result<RepairStatus> {
    let label = match &w {
        Work::Repair => "repair".to_string(),
        Work::Drain(id) => format!("drain of datanode {id}"),
        Work::Rebalance => "rebalance".to_string(),
    };
    let unit = if matches!(w, Work::Drain(_)) { Unit::Count("copies") } else { Unit::Bytes };
    let mut bar = Bar::new(label, unit);
    let mut base = c.repairs().await?;
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
        bar.show(m.done, m.left, &m.note, m.finished);
        if m.finished {
            return Ok(r);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
