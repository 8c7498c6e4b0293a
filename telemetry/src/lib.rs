//! What every Strata service shows an operator: Prometheus metrics (`Metrics`, served
//! at `/metrics` by `routes`) and the hardened HTTP server they are served on (`http`).
//!
//! Names follow Prometheus' conventions: a `strata_` prefix, base units (`_seconds`,
//! `_bytes`), `_total` on counters. Values that are cheap to read at scrape time
//! (capacity, Raft indexes, queue lengths) are read then, by a `collector`, instead of
//! being kept up to date on every change; events (requests, appends, flushes) are
//! counted where they happen.
//!
//! `/metrics` asks for `Authorization: Bearer TOKEN` when the service was given a
//! metrics token (`STRATA_METRICS_TOKEN`), as Garage's `metrics_token` does; without one
//! it is open, and the service says so in its log at start.

pub mod http;
mod process;

use std::fmt;
use std::sync::Arc;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
pub use prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// `Content-Type` of the Prometheus text exposition format (0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Environment variable holding the bearer token `/metrics` asks for.
pub const TOKEN_ENV: &str = "STRATA_METRICS_TOKEN";

/// Buckets of latency histograms, in seconds: 100 µs doubling to about 13 s, which
/// spans a datanode flush on NVMe and a slow multi-GiB PUT alike.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18)
}

/// Buckets of small counts (appends per flush, parts per upload): 1 doubling to 1024.
pub fn count_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 11)
}

/// A service's metrics: its registry and the process' own figures. Components register
/// full names (`strata_...`). A process that runs several of one component
/// (`ogw standalone` and its datanodes) registers one collector over all of them, with
/// a label telling them apart: the exposition format wants each name once.
pub struct Metrics {
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the standard `process_*` figures (CPU seconds, resident
    /// memory, open descriptors, start time).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::Process));
        Metrics { registry }
    }

    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

/// The token `/metrics` asks for, from `STRATA_METRICS_TOKEN` (empty: none).
pub fn token_from_env() -> Option<String> {
    std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty())
}

/// `GET /metrics` over `metrics`, asking for `token` as a bearer token when given.
pub fn routes<S: Clone + Send + Sync + 'static>(metrics: Arc<Metrics>, token: Option<String>) -> Router<S> {
    if token.is_none() {
        tracing::warn!("/metrics is served without a token (set {TOKEN_ENV} to ask for one)");
    }
    let token: Option<Arc<str>> = token.map(Into::into);
    Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let (metrics, token) = (metrics.clone(), token.clone());
            async move {
                if let Some(t) = &token {
                    if !bearer_matches(&headers, t) {
                        return unauthorized();
                    }
                }
                ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render()).into_response()
            }
        }),
    )
}

/// Whether the request carries `Authorization: Bearer TOKEN`, compared in constant time.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = given.strip_prefix("Bearer ") else {
        return false;
    };
    same_secret(given.trim(), token)
}

/// Whether two secrets are equal, compared in time that does not depend on where they
/// first differ.
pub fn same_secret(given: &str, secret: &str) -> bool {
    // Their SHA-256 digests, compared whole: equal lengths, so neither where the secrets
    // first differ nor whether their lengths do shows in the time taken (the secret's own
    // hashing takes one block per 64 bytes of it, whatever is given).
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(given.as_bytes()), Sha256::digest(secret.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a metrics token is required\n").into_response()
}

/// A collector from a closure run at every scrape: for figures read from state that
/// already exists (capacity, queue lengths, Raft indexes).
pub fn collector<F>(name: &'static str, f: F) -> Box<dyn Collector>
where
    F: Fn(&mut Scrape<'_>) -> fmt::Result + Send + Sync + 'static,
{
    Box::new(FnCollector { name, f })
}

struct FnCollector<F> {
    name: &'static str,
    f: F,
}

impl<F> fmt::Debug for FnCollector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "collector {}", self.name)
    }
}

impl<F> Collector for FnCollector<F>
where
    F: Fn(&mut Scrape<'_>) -> fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        (self.f)(&mut Scrape(encoder))
    }
}

/// What a collector writes into: gauges, counters and histograms, plain or by label
/// set. Names are given without the unit and without `_total` (the encoder adds them).
pub struct Scrape<'a>(DescriptorEncoder<'a>);

impl Scrape<'_> {
    pub fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) -> fmt::Result {
        let g = ConstGauge::new(value);
        let m = self.0.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?;
        g.encode(m)
    }

    pub fn gauges<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        values: impl IntoIterator<Item = (L, f64)>,
    ) -> fmt::Result {
        let kind = ConstGauge::new(0.0f64).metric_type();
        let mut m = self.0.encode_descriptor(name, help, unit.as_ref(), kind)?;
        for (labels, v) in values {
            ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    pub fn counter<N: EncodeCounterValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        value: N,
    ) -> fmt::Result {
        let c = ConstCounter::new(value);
        let m = self.0.encode_descriptor(name, help, unit.as_ref(), c.metric_type())?;
        c.encode(m)
    }

    pub fn counters<L: EncodeLabelSet, N: EncodeCounterValue>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        values: impl IntoIterator<Item = (L, N)>,
    ) -> fmt::Result {
        let kind = ConstCounter::new(0u64).metric_type();
        let mut m = self.0.encode_descriptor(name, help, unit.as_ref(), kind)?;
        for (labels, v) in values {
            ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }

    pub fn histograms<'h, L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        values: impl IntoIterator<Item = (L, &'h Histogram)>,
    ) -> fmt::Result {
        let kind = prometheus_client::metrics::MetricType::Histogram;
        let mut m = self.0.encode_descriptor(name, help, unit.as_ref(), kind)?;
        for (labels, h) in values {
            h.encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn secrets_match_only_when_equal() {
        let token = "s3cr3t-t0ken-0123456789";
        assert!(same_secret(token, token));
        for other in ["", "s3cr3t", "s3cr3t-t0ken-012345678", "s3cr3t-t0ken-01234567899", "S3cr3t-t0ken-0123456789"] {
            assert!(!same_secret(other, token), "{other:?}");
            assert!(!same_secret(token, other), "{other:?}");
        }
    }

    #[test]
    fn renders_counters_collectors_and_process_figures() {
        let mut m = Metrics::new();
        let c: Counter = Counter::default();
        m.registry().register("strata_things", "Things done", c.clone());
        c.inc_by(3);
        let h = Histogram::new(latency_buckets());
        h.observe(0.003);
        m.registry().register_collector(collector("test", move |s| {
            s.gauge("strata_free", "Free space", Some(Unit::Bytes), 42.0)?;
            s.counters(
                "strata_errors",
                "Errors",
                None,
                [([("node", "2"), ("device", "0")], 1u64), ([("node", "2"), ("device", "1")], 5u64)],
            )?;
            s.histograms("strata_flush", "Flushes", Some(Unit::Seconds), [([("node", "2")], &h)])
        }));
        let text = m.render();
        assert!(text.contains("# TYPE strata_things_total counter\nstrata_things_total 3\n"), "{text}");
        assert!(text.contains("strata_free_bytes 42"), "{text}");
        assert!(text.contains("strata_errors_total{node=\"2\",device=\"1\"} 5"), "{text}");
        assert!(text.contains("strata_flush_seconds_bucket{node=\"2\",le=\"0.0032\"} 1"), "{text}");
        assert!(text.contains("strata_flush_seconds_bucket{node=\"2\",le=\"0.0016\"} 0"), "{text}");
        assert!(text.contains("strata_flush_seconds_count{node=\"2\"} 1"), "{text}");
        let cpu = text.lines().find(|l| l.starts_with("process_cpu_seconds_total ")).expect(&text);
        assert!(cpu.split(' ').nth(1).unwrap().parse::<f64>().unwrap() >= 0.0);
        let rss = text.lines().find(|l| l.starts_with("process_resident_memory_bytes ")).expect(&text);
        assert!(rss.split(' ').nth(1).unwrap().parse::<f64>().unwrap() > 1e6, "{rss}");
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!bearer_matches(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(bearer_matches(&h, "s3cret"));
    }
}
