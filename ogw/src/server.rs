//! Wiring: the gateway on a listener, with authentication and optional virtual-host
//! style addressing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use client::{MetaClient, StreamClient, StreamConfig};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use proto::meta::Policy;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::body;
use crate::catalog::Catalog;
use crate::class::Classes;
use crate::cors::Cors;
use crate::data::Data;
use crate::db::Db;
use crate::limits::{
    ACCEPT_ERROR_BACKOFF, CONNECTIONS_MAX, FORM_FIELDS_BYTES_MAX, HEADER_BYTES_MAX, LOW_WATER_PERIOD,
    POST_OBJECT_BYTES_MAX,
};
use crate::metrics::S3Metrics;
use crate::s3::{stamp, Gateway};
use crate::secrets::MasterKey;

/// LogStreams per policy a gateway spreads bodies over, unless told otherwise.
pub const STREAMS_DEFAULT: usize = 4;
/// Policy of STANDARD objects and of new buckets' default, unless told otherwise.
pub const POLICY_DEFAULT: Policy = Policy::Replica { n: 3 };
/// Policy of the infrequent-access classes, unless told otherwise.
pub const EC_POLICY_DEFAULT: Policy = Policy::Ec { k: 4, m: 2 };

pub struct Options {
    /// Metanode addresses.
    pub metanodes: Vec<String>,
    /// Database URL (sqlite://, postgres://, mysql://).
    pub db: String,
    pub master_key: MasterKey,
    /// This gateway's name: it owns the streams recorded under it.
    pub name: String,
    /// Streams a body is spread over.
    pub streams: usize,
    /// Policy of STANDARD objects (and of buckets' defaults).
    pub policy: Policy,
    /// Policy of the infrequent-access classes (STANDARD_IA, ...).
    pub ec_policy: Policy,
    /// Base domains for virtual-host style requests (`bucket.DOMAIN`).
    pub domains: Vec<String>,
    /// How the gateway's LogStreams are written and read.
    pub stream: StreamConfig,
    /// Objects of at most this many bytes are kept in their catalog row (0: none).
    pub inline_max: u64,
}

/// Who sent a request, as bucket policies' conditions see it (`aws:SourceIp`,
/// `aws:SecureTransport`): in each request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub ip: std::net::IpAddr,
    pub secure: bool,
}

/// What a listener serves: S3 (s3s on the gateway) behind CORS preflights, counted in
/// its metrics.
#[derive(Clone)]
pub struct Front {
    pub s3: S3Service,
    pub cors: Arc<Cors>,
    pub metrics: S3Metrics,
}

/// The S3 front, and the catalog it uses. Its metrics go into `metrics`.
pub async fn build(o: Options, metrics: &mut telemetry::Metrics) -> anyhow::Result<(Front, Catalog)> {
    if o.name == gc::GC_WRITER {
        anyhow::bail!("--name {:?} is GC's own writer name; give the gateway another", o.name);
    }
    let db = Db::connect(&o.db).await?;
    let catalog = Catalog::new(db, o.master_key);
    let sc = StreamClient::new(MetaClient::new(o.metanodes.clone()), o.stream.clone());
    let data = Data::open(sc, &catalog, &o.name, o.streams.max(1), o.policy)
        .await
        .context("opening the gateway's LogStreams")?;
    let data = Arc::new(data);
    tokio::spawn(data.clone().publish_low_water(LOW_WATER_PERIOD));
    tokio::spawn(data.clone().reopen_pending());
    let classes = Classes { standard: o.policy, infrequent: o.ec_policy };
    let domains: Vec<String> = o.domains.iter().map(|d| d.to_ascii_lowercase()).collect();
    let cors = Arc::new(Cors::new(catalog.clone(), domains));
    let (gw, auth, access) = Gateway::new(catalog.clone(), data, classes, cors.clone(), o.inline_max);
    let mut b = S3ServiceBuilder::new(gw);
    b.set_auth(auth);
    b.set_access(access);
    // s3s reads a form POST's file into memory before the policy's signature is
    // checked: bound what an anonymous POST can make the gateway hold.
    let mut config = s3s::config::S3Config::default();
    config.post_object_max_file_size = POST_OBJECT_BYTES_MAX;
    config.form_max_fields_size = FORM_FIELDS_BYTES_MAX;
    config.form_max_field_size = config.form_max_field_size.min(FORM_FIELDS_BYTES_MAX);
    b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(config))));
    if !o.domains.is_empty() {
        for d in &o.domains {
            if d.is_empty() || d.starts_with('.') || d.contains(':') || d.contains('/') {
                anyhow::bail!("--domain {d:?} must be a bare domain name such as s3.example.com");
            }
        }
        b.set_host(Domains(o.domains.iter().map(|d| d.to_ascii_lowercase()).collect()));
    }
    catalog.db.register_metrics(metrics.registry());
    crate::md5lanes::register_metrics(metrics.registry());
    let metrics = S3Metrics::register(metrics.registry());
    Ok((Front { s3: b.build(), cors, metrics }, catalog))
}

/// Serves S3 on `listener` until `shutdown` resolves. A connection that sends no
/// request head within `idle` (a new one, or a kept-alive one between requests), or
/// leaves a body it is sending idle that long, is closed; at most
/// `CONNECTIONS_MAX` are open at once.
pub async fn serve(
    listener: TcpListener,
    front: Front,
    idle: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let open = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors (or memory): wait for some to close rather
                    // than spin on the error.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            tracing::warn!("{peer}: refused: {CONNECTIONS_MAX} connections are open");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        let secure = tls.is_some();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let Front { s3: svc, cors, metrics } = front.clone();
            async move {
                let counted = metrics.start();
                let version = req.version();
                let id = stamp::request_id();
                let (mut parts, body) = req.into_parts();
                parts.extensions.insert(Peer { ip: peer.ip(), secure });
                parts.extensions.insert(counted.op());
                stamp::date_for_sigv4(&mut parts);
                if let Some(r) = stamp::precheck(&parts, time::OffsetDateTime::now_utc()) {
                    let mut resp = http::Response::new(s3s::Body::from(stamp::error_body(r.code, &r.message, &id)));
                    *resp.status_mut() = r.status;
                    resp.headers_mut().insert(http::header::CONTENT_TYPE, "application/xml".parse().expect("valid"));
                    stamp::stamp(&mut resp, &id);
                    // The body (if any) is not read: the connection closes after this.
                    resp.headers_mut().insert(http::header::CONNECTION, "close".parse().expect("valid"));
                    counted.done(resp.status());
                    return Ok(resp);
                }
                if crate::cors::is_preflight(&parts) {
                    // Browsers send preflights without credentials: answered from the
                    // bucket's CORS rules alone, before authentication.
                    let (status, headers, error) = cors.preflight(&parts).await;
                    let body = error.map_or_else(bytes::Bytes::new, |(code, m)| stamp::error_body(code, m, &id));
                    let mut resp = http::Response::new(s3s::Body::from(body));
                    *resp.status_mut() = status;
                    resp.headers_mut().extend(headers);
                    if error.is_some() {
                        resp.headers_mut()
                            .insert(http::header::CONTENT_TYPE, "application/xml".parse().expect("valid"));
                    }
                    stamp::stamp(&mut resp, &id);
                    counted.done(resp.status());
                    return Ok(resp);
                }
                let origin = cors.request(&parts);
                let (body, read) = body::Tracked::new(body, idle);
                let attributes = stamp::is_get_attributes(&parts);
                let body = s3s::Body::http_body(metrics.count_in(body));
                let call = svc.call(http::Request::from_parts(parts, body));
                let mut resp = stamp::REQUEST_ID.scope(id.clone(), call).await;
                if let (Some(o), Ok(r)) = (&origin, &mut resp) {
                    cors.decorate(o, r.headers_mut()).await;
                }
                resp.map(|mut resp| {
                    if attributes {
                        stamp::unquote_etag(&mut resp);
                    }
                    stamp::stamp(&mut resp, &id);
                    body::close_if_unread(version, &read, &mut resp);
                    counted.done(resp.status());
                    resp.map(|b| s3s::Body::http_body(metrics.count_out(b)))
                })
            }
        });
        let tls = tls.clone();
        tokio::spawn(async move {
            // hyper's header timeout starts once it has seen the first bytes (it reads
            // them to tell HTTP/1 from HTTP/2): a client that sends nothing is timed here.
            if !matches!(tokio::time::timeout(idle, stream.peek(&mut [0u8; 1])).await, Ok(Ok(1))) {
                return;
            }
            match tls {
                None => serve_connection(TokioIo::new(stream), svc, idle).await,
                Some(acceptor) => match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => serve_connection(TokioIo::new(s), svc, idle).await,
                    Ok(Err(e)) => tracing::debug!("{peer}: TLS handshake: {e}"),
                    Err(_) => tracing::debug!("{peer}: no TLS handshake within {idle:?}"),
                },
            }
            drop(slot);
        });
    }
}

/// HTTP/1.1 or h2 on one connection (plain or TLS).
async fn serve_connection<I, S>(io: TokioIo<I>, svc: S, idle: Duration)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<s3s::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // A request's header block may be at most this large (431 beyond).
    conn.http1().max_buf_size(HEADER_BYTES_MAX).timer(TokioTimer::new()).header_read_timeout(idle);
    conn.http2().max_header_list_size(HEADER_BYTES_MAX as u32);
    if let Err(e) = conn.serve_connection(io, svc).await {
        tracing::debug!("connection: {e}");
    }
}

/// Virtual-host style for `bucket.DOMAIN[:port]`; anything else (the domain itself, an
/// IP address, another name) is path style. Ports are ignored.
struct Domains(Vec<String>);

impl s3s::host::S3Host for Domains {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let name = strip_port(host);
        for d in &self.0 {
            if name.len() > d.len() + 1
                && name.ends_with(d.as_str())
                && name.as_bytes()[name.len() - d.len() - 1] == b'.'
            {
                let bucket = &name[..name.len() - d.len() - 1];
                return Ok(s3s::host::VirtualHost::new(d.as_str()).with_bucket(bucket));
            }
        }
        Ok(s3s::host::VirtualHost::new(name))
    }
}

/// `host[:port]` -> `host` (an IPv6 literal keeps its colons).
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p))
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']')) =>
        {
            h
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use s3s::host::S3Host;

    use super::*;

    #[test]
    fn virtual_hosts_and_path_style() {
        let d = Domains(vec!["s3.example.com".into()]);
        let bucket = |h: &str| d.parse_host_header(h).unwrap().bucket().map(str::to_string);
        assert_eq!(bucket("logs.s3.example.com:9000"), Some("logs".into()));
        assert_eq!(bucket("a.b.s3.example.com"), Some("a.b".into()));
        assert_eq!(bucket("s3.example.com:9000"), None);
        assert_eq!(bucket("127.0.0.1:9000"), None);
        assert_eq!(bucket("[::1]:9000"), None);
        assert_eq!(bucket("xs3.example.com"), None);
    }
}
