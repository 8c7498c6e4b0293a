//! What the console plots: every `SAMPLE_PERIOD` the gateway reads its own metrics
//! (the registry `/metrics` renders) and the cluster's capacity (from the metanode),
//! turns the counters into rates over the period, and keeps the last `POINTS` points
//! (an hour) in memory. A page opened later still shows the last hour; a restarted
//! gateway starts an empty history (Prometheus keeps the long one).

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use client::status::{parse, sum, Sample};
use client::MetaClient;
use parking_lot::Mutex;
use serde::Serialize;

/// Time between two points.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(2);
/// Points kept: an hour.
pub const POINTS: usize = 1800;
/// How long one capacity question to the metanode may take.
const CAPACITY_TIMEOUT: Duration = Duration::from_secs(1);

/// The figures of one period.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Point {
    /// End of the period, ms since the epoch.
    pub t_ms: i64,
    pub requests_per_second: f64,
    /// Answers with a 5xx status.
    pub errors_per_second: f64,
    pub received_bytes_per_second: f64,
    pub sent_bytes_per_second: f64,
    /// Latency quantiles of the requests answered in the period (none without any).
    pub latency_p50_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    pub in_flight: f64,
    /// Device bytes used and in all, over every datanode (none when the metanode did
    /// not answer).
    pub used_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
}

/// The gateway's counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Totals {
    pub requests: f64,
    pub errors: f64,
    pub received: f64,
    pub sent: f64,
    pub in_flight: f64,
    /// The latency histogram over every operation: (upper bound, cumulative count).
    pub buckets: Vec<(f64, f64)>,
}

impl Totals {
    pub fn read(samples: &[Sample]) -> Totals {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for s in samples.iter().filter(|s| s.name == "strata_s3_request_seconds_bucket") {
            let Some(le) = s.label("le").and_then(|l| l.parse::<f64>().ok()) else { continue };
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += s.value,
                None => buckets.push((le, s.value)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Totals {
            requests: sum(samples, "strata_s3_requests_total", |_| true),
            errors: sum(samples, "strata_s3_requests_total", |s| s.label("status").is_some_and(|c| c >= "500")),
            received: sum(samples, "strata_s3_received_bytes_total", |_| true),
            sent: sum(samples, "strata_s3_sent_bytes_total", |_| true),
            in_flight: sum(samples, "strata_s3_requests_in_flight", |_| true),
            buckets,
        }
    }
}

/// The point for the period from `before` to `after`, `secs` long.
pub fn point(before: &Totals, after: &Totals, secs: f64, t_ms: i64, capacity: Option<(u64, u64)>) -> Point {
    let rate = |a: f64, b: f64| if secs > 0.0 { (a - b).max(0.0) / secs } else { 0.0 };
    Point {
        t_ms,
        requests_per_second: rate(after.requests, before.requests),
        errors_per_second: rate(after.errors, before.errors),
        received_bytes_per_second: rate(after.received, before.received),
        sent_bytes_per_second: rate(after.sent, before.sent),
        latency_p50_seconds: quantile(&before.buckets, &after.buckets, 0.5),
        latency_p99_seconds: quantile(&before.buckets, &after.buckets, 0.99),
        in_flight: after.in_flight,
        used_bytes: capacity.map(|(used, _)| used),
        capacity_bytes: capacity.map(|(_, cap)| cap),
    }
}

/// The `q` quantile of what was observed between two readings of one cumulative
/// histogram, interpolated linearly inside its bucket (as PromQL's
/// `histogram_quantile`); a quantile in the last, unbounded bucket is the largest
/// finite bound. None when nothing was observed.
pub fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let count = |le: f64| {
        let a = after.iter().find(|(b, _)| *b == le).map_or(0.0, |x| x.1);
        let b = before.iter().find(|(b, _)| *b == le).map_or(0.0, |x| x.1);
        (a - b).max(0.0)
    };
    let total = after.last().map_or(0.0, |&(le, _)| count(le));
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, _) in after {
        let c = count(le);
        if c >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let share = if c > below { (rank - below) / (c - below) } else { 1.0 };
            return Some(lower + (le - lower) * share);
        }
        (lower, below) = (le, c);
    }
    Some(lower)
}

/// The points of the last hour.
#[derive(Default)]
pub struct History {
    points: Mutex<VecDeque<Point>>,
}

impl History {
    pub fn push(&self, p: Point) {
        let mut points = self.points.lock();
        if points.len() == POINTS {
            points.pop_front();
        }
        points.push_back(p);
    }

    pub fn points(&self) -> Vec<Point> {
        self.points.lock().iter().cloned().collect()
    }

    pub fn last(&self) -> Option<Point> {
        self.points.lock().back().cloned()
    }
}

/// Samples into `history` every `SAMPLE_PERIOD` until it is dropped.
pub async fn sample(history: Weak<History>, metrics: Arc<telemetry::Metrics>, meta: MetaClient) {
    let mut before = Totals::read(&parse(&metrics.render()));
    let mut at = Instant::now();
    let mut tick = tokio::time::interval(SAMPLE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(h) = history.upgrade() else { return };
        let capacity = match tokio::time::timeout(CAPACITY_TIMEOUT, meta.nodes()).await {
            Ok(Ok(nodes)) => {
                let devices = nodes.iter().flat_map(|n| &n.devices);
                let (cap, free) = devices.fold((0u64, 0u64), |(c, f), d| {
                    (c.saturating_add(d.capacity_bytes), f.saturating_add(d.free_bytes))
                });
                Some((cap.saturating_sub(free), cap))
            }
            _ => None,
        };
        let after = Totals::read(&parse(&metrics.render()));
        let now = Instant::now();
        h.push(point(&before, &after, (now - at).as_secs_f64(), crate::db::now_ms(), capacity));
        (before, at) = (after, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_observations_of_the_period_only() {
        let before = [(0.01, 100.0), (0.1, 100.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
        // In the period: 50 under 10 ms, 40 more under 100 ms, 10 more under 1 s.
        let after = [(0.01, 150.0), (0.1, 190.0), (1.0, 200.0), (f64::INFINITY, 200.0)];
        assert_eq!(quantile(&before, &after, 0.5), Some(0.01));
        let p90 = quantile(&before, &after, 0.9).unwrap();
        assert!((p90 - 0.1).abs() < 1e-9, "{p90}");
        let p99 = quantile(&before, &after, 0.99).unwrap();
        assert!((p99 - (0.1 + 0.9 * 0.9)).abs() < 1e-9, "{p99}");
        assert_eq!(quantile(&after, &after, 0.5), None, "nothing observed");
        let slow = [(0.01, 150.0), (0.1, 190.0), (1.0, 200.0), (f64::INFINITY, 300.0)];
        assert_eq!(quantile(&before, &slow, 0.99), Some(1.0), "past the last bound");
    }

    #[test]
    fn rates_and_histograms_are_read_from_the_text_format() {
        let text = |n: u32| {
            format!(
                "strata_s3_requests_total{{op=\"PutObject\",status=\"200\"}} {}\n\
                 strata_s3_requests_total{{op=\"GetObject\",status=\"503\"}} {}\n\
                 strata_s3_received_bytes_total {}\n\
                 strata_s3_sent_bytes_total 0\n\
                 strata_s3_requests_in_flight 3\n\
                 strata_s3_request_seconds_bucket{{op=\"PutObject\",le=\"0.01\"}} {}\n\
                 strata_s3_request_seconds_bucket{{op=\"PutObject\",le=\"+Inf\"}} {}\n\
                 strata_s3_request_seconds_bucket{{op=\"GetObject\",le=\"0.01\"}} 0\n\
                 strata_s3_request_seconds_bucket{{op=\"GetObject\",le=\"+Inf\"}} {}\n",
                10 * n,
                n,
                1000 * n,
                10 * n,
                10 * n,
                n
            )
        };
        let (a, b) = (Totals::read(&parse(&text(1))), Totals::read(&parse(&text(3))));
        assert_eq!(a.buckets, vec![(0.01, 10.0), (f64::INFINITY, 11.0)]);
        let p = point(&a, &b, 2.0, 7, Some((5, 10)));
        assert_eq!(p.requests_per_second, 11.0);
        assert_eq!(p.errors_per_second, 1.0);
        assert_eq!(p.received_bytes_per_second, 1000.0);
        assert_eq!(p.in_flight, 3.0);
        assert_eq!((p.used_bytes, p.capacity_bytes), (Some(5), Some(10)));
        assert!(p.latency_p50_seconds.unwrap() <= 0.01);
    }

    #[test]
    fn the_history_keeps_the_last_hour() {
        let h = History::default();
        let p = |t| point(&Totals::default(), &Totals::default(), 1.0, t, None);
        for t in 0..POINTS as i64 + 5 {
            h.push(p(t));
        }
        let points = h.points();
        assert_eq!(points.len(), POINTS);
        assert_eq!(points[0].t_ms, 5);
        assert_eq!(h.last().unwrap().t_ms, POINTS as i64 + 4);
    }
}
