//! The gateway's metrics: S3 requests by operation and status, their latency, body
//! bytes in and out, and requests in flight. Operation names are s3s' (`PutObject`);
//! a request refused before its operation was known (a bad signature, an unknown
//! route, a precheck) counts as `unknown`. Bucket and key names are never labels:
//! their number has no bound.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    op: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: &'static str,
}

type Latencies = Family<Op, Histogram, fn() -> Histogram>;

#[derive(Clone)]
pub struct S3Metrics {
    requests: Family<Outcome, Counter>,
    seconds: Latencies,
    received: Counter,
    sent: Counter,
    in_flight: Gauge,
}

/// Where the access check leaves the operation's name for the request's metrics.
#[derive(Clone, Default)]
pub struct OpName(Arc<OnceLock<&'static str>>);

impl OpName {
    pub fn set(&self, name: &str) {
        let _ = self.0.set(intern(name));
    }

    fn get(&self) -> &'static str {
        self.0.get().copied().unwrap_or("unknown")
    }
}

/// The one `&'static str` of an operation name. s3s' operations are a fixed set
/// (about a hundred), so what is leaked here is bounded.
fn intern(name: &str) -> &'static str {
    static NAMES: parking_lot::Mutex<Vec<&'static str>> = parking_lot::Mutex::new(Vec::new());
    let mut names = NAMES.lock();
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.push(n);
    n
}

impl S3Metrics {
    pub fn register(r: &mut Registry) -> S3Metrics {
        let m = S3Metrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(|| Histogram::new(telemetry::latency_buckets())),
            received: Counter::default(),
            sent: Counter::default(),
            in_flight: Gauge::default(),
        };
        r.register("strata_s3_requests", "S3 requests answered, by operation and HTTP status", m.requests.clone());
        r.register_with_unit(
            "strata_s3_request",
            "Time from a request's arrival to its response head (for a GET, to the first byte), by operation",
            Unit::Seconds,
            m.seconds.clone(),
        );
        r.register_with_unit("strata_s3_received", "Request body bytes received", Unit::Bytes, m.received.clone());
        r.register_with_unit("strata_s3_sent", "Response body bytes sent", Unit::Bytes, m.sent.clone());
        r.register("strata_s3_requests_in_flight", "S3 requests being handled", m.in_flight.clone());
        m
    }

    /// Starts timing one request; `Request::done` records it.
    pub fn start(&self) -> Request {
        self.in_flight.inc();
        Request { m: self.clone(), op: OpName::default(), started: Instant::now(), done: false }
    }

    pub fn count_in<B>(&self, body: B) -> Counted<B> {
        Counted { inner: body, bytes: self.received.clone() }
    }

    pub fn count_out<B>(&self, body: B) -> Counted<B> {
        Counted { inner: body, bytes: self.sent.clone() }
    }
}

/// One request being handled. Dropped without `done` (the client went away before
/// an answer), it still leaves the in-flight gauge, counted with status 499 as nginx
/// does.
pub struct Request {
    m: S3Metrics,
    op: OpName,
    started: Instant,
    done: bool,
}

impl Request {
    /// The slot the access check names the operation in (put in the request's
    /// extensions).
    pub fn op(&self) -> OpName {
        self.op.clone()
    }

    pub fn done(mut self, status: http::StatusCode) {
        self.record(status.as_u16());
    }

    fn record(&mut self, status: u16) {
        self.done = true;
        self.m.in_flight.dec();
        let op = self.op.get();
        self.m.requests.get_or_create(&Outcome { op, status }).inc();
        self.m.seconds.get_or_create(&Op { op }).observe(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if !self.done {
            self.record(499);
        }
    }
}

/// A body whose data bytes are counted as they pass.
pub struct Counted<B> {
    inner: B,
    bytes: Counter,
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.bytes.inc_by(d.len() as u64);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
