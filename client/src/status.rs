//! The cluster's status, as `strata status` prints it (and as the web console shows
//! it): the whole cluster on one screen, as `ceph -s` or `garage status` show theirs. It asks every metanode member for its view of the group, the leader
//! for datanodes, extents and repair, and (given admin listeners) the gateways' and
//! GC's metrics, sampled twice a second apart for rates. `--json` prints the same
//! report for scripts.
//!
//! Health is `ok`, `warn` (redundancy or capacity reduced, a member or a datanode
//! unreachable) or `error` (no leader, or data unreadable until a datanode returns),
//! with every reason listed.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::MetaClient;
use anyhow::Context;
use proto::meta::{Degraded, ExtentCounts};
use serde::Serialize;

/// Free space below this share of capacity is a warning.
const FREE_SHARE_WARN: f64 = 0.10;
/// Time between the two metrics samples rates are taken over.
const RATE_SAMPLE: Duration = Duration::from_secs(1);
/// How long one admin listener may take to answer.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize)]
pub struct Report {
    pub health: Health,
    pub metanodes: Vec<Member>,
    pub leader: Option<u64>,
    pub datanodes: Vec<Datanode>,
    pub extents: Vec<ExtentCounts>,
    pub repair: Option<Repair>,
    pub gc: Option<Gc>,
    pub s3: Option<S3>,
}

#[derive(Serialize)]
pub struct Health {
    pub status: &'static str,
    pub reasons: Vec<String>,
}

#[derive(Serialize)]
pub struct Member {
    pub id: Option<u64>,
    pub addr: String,
    pub role: &'static str,
    pub term: Option<u64>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    pub error: Option<String>,
}

#[derive(Serialize)]
pub struct Datanode {
    pub id: u64,
    pub addr: String,
    pub zone: String,
    pub state: &'static str,
    pub capacity_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Serialize)]
pub struct Repair {
    pub degraded: Vec<Degraded>,
    pub unreadable: usize,
    pub waiting: usize,
    pub in_flight: usize,
    pub remaining_bytes: u64,
    pub draining: Vec<(u64, usize)>,
    pub rebalance_spread: f64,
    pub rebalance_planned_bytes: u64,
    pub rebalance_paused: bool,
}

#[derive(Serialize, Default)]
pub struct Gc {
    pub last_pass_age_seconds: Option<f64>,
    pub extents_pending: f64,
    pub bytes_pending: f64,
    pub reclaimed_bytes_total: f64,
    pub pass_failures_total: f64,
}

#[derive(Serialize, Default)]
pub struct S3 {
    pub requests_per_second: f64,
    pub errors_per_second: f64,
    pub by_operation: BTreeMap<String, f64>,
    pub received_bytes_per_second: f64,
    pub sent_bytes_per_second: f64,
    pub in_flight: f64,
}

/// Where to look, and how to prove who is asking.
pub struct Target {
    pub meta: Vec<String>,
    /// Admin listeners (`http://HOST:PORT`) of gateways and GC.
    pub admin: Vec<String>,
    pub metrics_token: Option<String>,
}

pub async fn report(t: &Target) -> anyhow::Result<Report> {
    let mc = MetaClient::new(t.meta.clone());
    let mut reasons = Vec::new();
    let mut error = false;

    // Every member's own view; the membership comes from the first that answers.
    let mut members = Vec::new();
    let mut addrs: Vec<String> = t.meta.clone();
    let mut leader = None;
    let mut i = 0;
    while i < addrs.len() {
        let addr = addrs[i].clone();
        i += 1;
        match mc.status_of(&addr).await {
            Ok(s) => {
                for v in s.voters.iter().chain(&s.learners) {
                    if !addrs.contains(&v.addr) && !v.addr.is_empty() {
                        addrs.push(v.addr.clone());
                    }
                }
                let is_leader = s.leader.as_ref().is_some_and(|l| l.id == s.id);
                if is_leader {
                    leader = Some(s.id);
                }
                let role = if is_leader {
                    "leader"
                } else if s.learners.iter().any(|l| l.id == s.id) {
                    "learner"
                } else {
                    "follower"
                };
                members.push(Member {
                    id: Some(s.id),
                    addr,
                    role,
                    term: Some(s.term),
                    last_log_index: s.last_log_index,
                    last_applied: s.last_applied,
                    error: None,
                });
            }
            Err(e) => {
                reasons.push(format!("metanode {addr} does not answer: {e}"));
                members.push(Member {
                    id: None,
                    addr,
                    role: "unreachable",
                    term: None,
                    last_log_index: None,
                    last_applied: None,
                    error: Some(e.to_string()),
                });
            }
        }
    }
    if leader.is_none() {
        error = true;
        reasons.push("the metanode group has no leader: the cluster cannot change".into());
    }

    let mut datanodes = Vec::new();
    let mut extents = Vec::new();
    let mut repair = None;
    if leader.is_some() {
        let nodes = mc.nodes().await.context("listing datanodes")?;
        let (mut cap, mut free) = (0u64, 0u64);
        for n in &nodes {
            let state = n.shown_state();
            if state == "down" {
                reasons.push(format!("datanode {} ({}) is down", n.id.0, n.addr));
            }
            let c: u64 = n.devices.iter().map(|d| d.capacity_bytes).sum();
            let f: u64 = n.devices.iter().map(|d| d.free_bytes).sum();
            cap += c;
            free += f;
            datanodes.push(Datanode {
                id: n.id.0,
                addr: n.addr.clone(),
                zone: n.zone.clone(),
                state,
                capacity_bytes: c,
                free_bytes: f,
            });
        }
        if cap > 0 && (free as f64) < cap as f64 * FREE_SHARE_WARN {
            reasons.push(format!("{} of {} free ({:.0} %)", bytes(free), bytes(cap), free as f64 * 100.0 / cap as f64));
        }
        extents = mc.extent_counts().await.context("counting extents")?;
        let r = mc.repairs().await.context("asking for repair status")?;
        let degraded: usize = r.degraded.iter().map(|d| d.extents).sum();
        if r.unreadable > 0 {
            error = true;
            reasons.push(format!("{} extents are unreadable until a datanode returns", r.unreadable));
        }
        if degraded > 0 {
            reasons.push(format!("{degraded} extents are missing copies"));
        }
        repair = Some(Repair {
            degraded: r.degraded,
            unreadable: r.unreadable,
            waiting: r.waiting,
            in_flight: r.in_flight.len(),
            remaining_bytes: r.waiting_bytes,
            draining: r.draining.iter().map(|(n, c)| (n.0, *c)).collect(),
            rebalance_spread: r.rebalance.spread_permille as f64 / 1000.0,
            rebalance_planned_bytes: r.rebalance.planned_bytes,
            rebalance_paused: r.rebalance.paused,
        });
    }

    let (gc, s3) = if t.admin.is_empty() {
        (None, None)
    } else {
        let (gc, s3) = admin(t, &mut reasons).await;
        (gc, s3)
    };
    if let Some(g) = &gc {
        if g.pass_failures_total > 0.0 {
            reasons.push(format!("{} GC passes failed", g.pass_failures_total));
        }
    }
    let status = if error {
        "error"
    } else if reasons.is_empty() {
        "ok"
    } else {
        "warn"
    };
    Ok(Report { health: Health { status, reasons }, metanodes: members, leader, datanodes, extents, repair, gc, s3 })
}

/// GC and S3 figures from the admin listeners' metrics, sampled twice.
async fn admin(t: &Target, reasons: &mut Vec<String>) -> (Option<Gc>, Option<S3>) {
    let http = crate::link_http(reqwest::Client::builder().timeout(ADMIN_TIMEOUT)).build().expect("HTTP client");
    let scrape = |url: String| {
        let http = http.clone();
        let token = t.metrics_token.clone();
        async move {
            let mut req = http.get(format!("{}/metrics", url.trim_end_matches('/')));
            if let Some(tok) = token {
                req = req.bearer_auth(tok);
            }
            let resp = req.send().await.map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{}", resp.status()));
            }
            resp.text().await.map(|s| parse(&s)).map_err(|e| e.to_string())
        }
    };
    let mut first = Vec::new();
    for a in &t.admin {
        match scrape(a.clone()).await {
            Ok(s) => first.push((a.clone(), s)),
            Err(e) => reasons.push(format!("admin listener {a}: {e}")),
        }
    }
    if first.is_empty() {
        return (None, None);
    }
    tokio::time::sleep(RATE_SAMPLE).await;
    let mut gc: Option<Gc> = None;
    let mut s3: Option<S3> = None;
    let secs = RATE_SAMPLE.as_secs_f64();
    for (a, before) in first {
        let Ok(after) = scrape(a.clone()).await else { continue };
        if after.iter().any(|s| s.name.starts_with("strata_gc_")) {
            let g = gc.get_or_insert_with(Gc::default);
            let last = sum(&after, "strata_gc_last_pass_timestamp_seconds", |_| true);
            if last > 0.0 {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                g.last_pass_age_seconds = Some((now.as_secs_f64() - last).max(0.0));
            }
            g.extents_pending += sum(&after, "strata_gc_extents_pending", |_| true);
            g.bytes_pending += sum(&after, "strata_gc_pending_bytes", |_| true);
            g.reclaimed_bytes_total =
                g.reclaimed_bytes_total.max(sum(&after, "strata_gc_reclaimed_bytes_total", |_| true));
            g.pass_failures_total += sum(&after, "strata_gc_pass_failures_total", |_| true);
        }
        if after.iter().any(|s| s.name.starts_with("strata_s3_")) {
            let s = s3.get_or_insert_with(S3::default);
            let rate = |name: &str, keep: &dyn Fn(&Sample) -> bool| {
                (sum(&after, name, keep) - sum(&before, name, keep)).max(0.0) / secs
            };
            s.requests_per_second += rate("strata_s3_requests_total", &|_| true);
            s.errors_per_second += rate("strata_s3_requests_total", &|x| x.label("status").is_some_and(|c| c >= "500"));
            let ops: std::collections::BTreeSet<String> = after
                .iter()
                .filter(|x| x.name == "strata_s3_requests_total")
                .filter_map(|x| x.label("op"))
                .map(String::from)
                .collect();
            for op in ops {
                let r = rate("strata_s3_requests_total", &|x| x.label("op") == Some(op.as_str()));
                if r > 0.0 {
                    *s.by_operation.entry(op).or_default() += r;
                }
            }
            s.received_bytes_per_second += rate("strata_s3_received_bytes_total", &|_| true);
            s.sent_bytes_per_second += rate("strata_s3_sent_bytes_total", &|_| true);
            s.in_flight += sum(&after, "strata_s3_requests_in_flight", |_| true);
        }
    }
    (gc, s3)
}

/// One line of the Prometheus text format.
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub fn sum(samples: &[Sample], name: &str, keep: impl Fn(&Sample) -> bool) -> f64 {
    samples.iter().filter(|s| s.name == name && keep(s)).map(|s| s.value).sum()
}

/// Parses the Prometheus text format (comments skipped; lines that do not parse are
/// ignored).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return None,
    };
    let mut labels = Vec::new();
    let rest = if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let end;
        // key="value" pairs, values with \" \\ \n escapes.
        loop {
            let (k_start, c) = chars.next()?;
            if c == '}' {
                end = k_start + 1;
                break;
            }
            if c == ',' || c == ' ' {
                continue;
            }
            let eq = body[k_start..].find('=')? + k_start;
            let key = body[k_start..eq].to_string();
            while chars.next()?.0 < eq + 1 {}
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key, value));
        }
        &body[end..]
    } else {
        rest
    };
    let value = rest.split_ascii_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample { name: name.to_string(), labels, value })
}

pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let text = "# HELP x y\n# TYPE strata_s3_requests_total counter\n\
                    strata_s3_requests_total{op=\"PutObject\",status=\"200\"} 12\n\
                    strata_s3_requests_total{op=\"Get\\\"Odd\\\\\",status=\"503\"} 1.5e1\n\
                    process_open_fds 9\n\
                    broken{op=\"x\" 3\n";
        let s = parse(text);
        assert_eq!(s.len(), 3, "the broken line is skipped");
        assert_eq!(s[0].label("op"), Some("PutObject"));
        assert_eq!(s[0].value, 12.0);
        assert_eq!(s[1].label("op"), Some("Get\"Odd\\"));
        assert_eq!(s[1].label("status"), Some("503"));
        assert_eq!(s[1].value, 15.0);
        assert_eq!((s[2].name.as_str(), s[2].value), ("process_open_fds", 9.0));
        assert_eq!(sum(&s, "strata_s3_requests_total", |x| x.label("status").is_some_and(|c| c >= "500")), 15.0);
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }
}
