//! How `strata status` prints the report (`client::status`) on a terminal.

use client::status::{bytes, Report};

/// The report for a terminal.
pub fn print(r: &Report) {
    println!("health:     {}", r.health.status.to_uppercase());
    for why in &r.health.reasons {
        println!("            - {why}");
    }
    let leader = r.leader.map_or("none".to_string(), |l| l.to_string());
    let term = r.metanodes.iter().filter_map(|m| m.term).max().unwrap_or(0);
    let n = r.metanodes.len();
    println!("metanodes:  {n} member{}, leader {leader}, term {term}", if n == 1 { "" } else { "s" });
    for m in &r.metanodes {
        let id = m.id.map_or("?".into(), |i| i.to_string());
        match &m.error {
            None => println!(
                "            {id:>3}  {:<22} {:<9} log {} applied {}",
                m.addr,
                m.role,
                m.last_log_index.unwrap_or(0),
                m.last_applied.unwrap_or(0)
            ),
            Some(e) => println!("            {id:>3}  {:<22} {:<9} {e}", m.addr, m.role),
        }
    }
    let count = |s: &str| r.datanodes.iter().filter(|d| d.state == s).count();
    let cap: u64 = r.datanodes.iter().map(|d| d.capacity_bytes).sum();
    let free: u64 = r.datanodes.iter().map(|d| d.free_bytes).sum();
    println!(
        "datanodes:  {} up, {} down, {} draining; {} free of {}",
        count("up"),
        count("down"),
        count("draining"),
        bytes(free),
        bytes(cap)
    );
    for d in &r.datanodes {
        let zone = if d.zone.is_empty() { "-" } else { &d.zone };
        println!(
            "            {:>3}  {:<22} {:<9} zone {:<6} {} free of {}",
            d.id,
            d.addr,
            d.state,
            zone,
            bytes(d.free_bytes),
            bytes(d.capacity_bytes)
        );
    }
    if r.extents.is_empty() {
        println!("extents:    none");
    }
    for (i, e) in r.extents.iter().enumerate() {
        let head = if i == 0 { "extents:" } else { "" };
        println!(
            "{head:<12}{:<10} {} open, {} sealed ({} per copy)",
            e.policy.to_string(),
            e.open,
            e.sealed,
            bytes(e.sealed_bytes)
        );
    }
    if let Some(p) = &r.repair {
        let degraded: usize = p.degraded.iter().map(|d| d.extents).sum();
        println!(
            "repair:     {degraded} degraded, {} unreadable; {} copies waiting, {} in flight, {} to write",
            p.unreadable,
            p.waiting,
            p.in_flight,
            bytes(p.remaining_bytes)
        );
        for d in &p.degraded {
            println!("            {} missing {}: {} extents", d.policy, d.missing, d.extents);
        }
        for (n, c) in &p.draining {
            println!("            datanode {n} draining: {c} copies left");
        }
        println!(
            "rebalance:  spread {:.1} %, {} planned{}",
            p.rebalance_spread * 100.0,
            bytes(p.rebalance_planned_bytes),
            if p.rebalance_paused { " (paused)" } else { "" }
        );
    }
    if let Some(g) = &r.gc {
        let last = g.last_pass_age_seconds.map_or("no pass yet".to_string(), |s| format!("last pass {s:.0} s ago"));
        println!(
            "gc:         {last}; {} extents ({}) wait for their grace period; {} reclaimed in all",
            g.extents_pending,
            bytes(g.bytes_pending as u64),
            bytes(g.reclaimed_bytes_total as u64)
        );
    }
    if let Some(s) = &r.s3 {
        println!(
            "s3:         {:.1} requests/s ({:.1} errors/s), {}/s in, {}/s out, {} in flight",
            s.requests_per_second,
            s.errors_per_second,
            bytes(s.received_bytes_per_second as u64),
            bytes(s.sent_bytes_per_second as u64),
            s.in_flight
        );
        for (op, rate) in &s.by_operation {
            println!("            {op:<24} {rate:.1}/s");
        }
    }
}
