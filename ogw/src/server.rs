//! Wiring: the gateway on a listener, with authentication and optional virtual-host
//! style addressing.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use client::{MetaClient, StreamClient, StreamConfig};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proto::meta::Policy;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;

use crate::data::Data;
use crate::db::Db;
use crate::meta::Meta;
use crate::s3::Gateway;
use crate::secrets::MasterKey;

pub struct Options {
    /// Metanode addresses.
    pub meta: Vec<String>,
    /// Database URL (sqlite://, postgres://, mysql://).
    pub db: String,
    pub master_key: MasterKey,
    /// This gateway's name: it owns the streams recorded under it.
    pub name: String,
    /// Streams a body is spread over.
    pub streams: usize,
    /// Policy of the gateway's streams.
    pub policy: Policy,
    /// Base domains for virtual-host style requests (`bucket.DOMAIN`).
    pub domains: Vec<String>,
}

/// The S3 service, and the metadata store it uses.
pub async fn build(o: Options) -> anyhow::Result<(S3Service, Meta)> {
    let db = Db::connect(&o.db).await?;
    let meta = Meta { db, key: o.master_key };
    let sc = StreamClient::new(MetaClient::new(o.meta.clone()), StreamConfig::default());
    let data =
        Data::open(sc, &meta, &o.name, o.streams.max(1), o.policy).await.context("opening the gateway's LogStreams")?;
    let (gw, auth) = Gateway::new(meta.clone(), Arc::new(data), o.policy.to_string());
    let mut b = S3ServiceBuilder::new(gw);
    b.set_auth(auth);
    if !o.domains.is_empty() {
        let d =
            s3s::host::MultiDomain::new(o.domains.iter().map(String::as_str)).map_err(|e| anyhow::anyhow!("{e}"))?;
        b.set_host(d);
    }
    Ok((b.build(), meta))
}

/// Serves S3 on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, service: S3Service, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let svc = service.clone();
        tokio::spawn(async move {
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!("connection: {e}");
            }
        });
    }
}
