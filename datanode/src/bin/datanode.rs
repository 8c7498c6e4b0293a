use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use datanode::config::{Args, Config};
use datanode::extent::ExtentStore;
use datanode::server::Server;

/// Admin connections that send no request for this long are closed.
const ADMIN_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// How long tasks still running at shutdown (a rebuild's blocking reads) are waited for.
const SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let r = run();
    // On every path, SPDK's reactor (if it started) stops before the process exits:
    // DPDK's exit handlers free the memory a polling reactor still uses (issue 21).
    #[cfg(feature = "spdk")]
    datanode::blobstore::spdk::shutdown();
    if let Err(e) = r {
        eprintln!("datanode: error: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    // Flags, then STRATA_* variables, then its own --config file (config.rs).
    let style = proto::config::Style { commands: &[], no_env: &[], file: false };
    let cfg = Config::from_args(&proto::config::parse::<Args>(style))?;
    // Heartbeats, scrub reports and rebuilds' reads from other datanodes go as a node.
    proto::auth::set_default(cfg.keyring.as_ref().and_then(|k| k.credential(proto::auth::Role::Node)));
    if cfg.keyring.is_none() {
        tracing::warn!("no cluster secrets: anyone on this machine may connect to this datanode");
    }
    let store = Arc::new(ExtentStore::open(&cfg.store)?);
    let r = &store.recovery;
    tracing::info!(
        "recovered {} extents ({} sealed), dropped {} torn bytes, {} corrupt records",
        r.extents,
        r.sealed,
        r.torn_bytes_dropped,
        r.corrupt_records
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let served = rt.block_on(serve(&cfg, store.clone()));
    // Heartbeats, scrub and connections stop before the store does; then the store
    // closes its devices (SPDK's blobstores are unloaded, so the next start recovers
    // nothing), whether serving ended on a signal or failed to start.
    rt.shutdown_timeout(SHUTDOWN_TIMEOUT);
    store.shutdown();
    served
}

/// Listens and serves until SIGTERM or Ctrl-C.
async fn serve(cfg: &Config, store: Arc<ExtentStore>) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(cfg.listen).await.with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let admin = match cfg.admin_addr {
        Some(a) => {
            let al =
                tokio::net::TcpListener::bind(a).await.with_context(|| format!("cannot listen on {a} (admin_addr)"))?;
            let mut metrics = telemetry::Metrics::new();
            metrics.registry().register_collector(datanode::metrics::collector(vec![(cfg.node_id, store.clone())]));
            let app = axum::Router::new()
                .route("/health", axum::routing::get(|| async { "ok\n" }))
                .merge(telemetry::routes(Arc::new(metrics), telemetry::token_from_env()));
            let admin = al.local_addr()?;
            tokio::spawn(telemetry::http::serve(al, app, ADMIN_IDLE_TIMEOUT, None, std::future::pending()));
            format!("admin on http://{admin}; ")
        }
        None => String::new(),
    };
    // Tests and scripts wait for this line.
    // A closed stdout (the reader went away) must not stop the server.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{admin}datanode {} listening on {addr}", cfg.node_id).and_then(|()| out.flush());
    if let Some(meta) = cfg.meta.clone() {
        let advertise = meta.advertise.clone().unwrap_or_else(|| addr.to_string());
        tokio::spawn(datanode::scrub::run(store.clone(), cfg.node_id, meta.clone()));
        tokio::spawn(datanode::heartbeat::run(store.clone(), cfg.node_id, advertise, meta));
    }
    let server = Arc::new(
        Server::new(store.clone(), cfg.node_id)
            .with_rebuild_rate(cfg.rebuild_rate, cfg.rebuild_rate_busy)
            .with_keyring(cfg.keyring.clone())
            .with_tls(cfg.tls.as_ref()),
    );
    if let Some(certs) = &cfg.tls {
        certs.reload_on_sighup()?;
    }
    server.serve(listener, client::shutdown_signal()).await;
    tracing::info!("shutting down");
    Ok(())
}
