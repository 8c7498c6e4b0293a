use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use client::MetaClient;
use datanode::config::{Args, Config, MetaConfig};
use datanode::extent::ExtentStore;
use datanode::server::Server;
use proto::meta::{DeviceInfo, Heartbeat, MetaError, RegisterNode};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run() {
        eprintln!("datanode: error: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    let cfg = Config::from_args(&Args::parse())?;
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
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        // Tests and scripts wait for this line.
        println!("datanode {} listening on {addr}", cfg.node_id);
        std::io::stdout().flush()?;
        if let Some(meta) = cfg.meta.clone() {
            let advertise = meta.advertise.clone().unwrap_or_else(|| addr.to_string());
            tokio::spawn(heartbeat_loop(store.clone(), cfg.node_id, advertise, meta));
        }
        let server = Arc::new(Server::new(store.clone(), cfg.node_id));
        server.serve(listener, shutdown_signal()).await;
        tracing::info!("shutting down");
        anyhow::Ok(())
    })?;
    store.shutdown();
    Ok(())
}

fn devices(store: &ExtentStore) -> Vec<DeviceInfo> {
    store
        .device_stats()
        .iter()
        .map(|d| DeviceInfo {
            id: d.device,
            capacity_bytes: d.capacity_bytes,
            free_bytes: d.capacity_bytes.saturating_sub(d.used_bytes),
        })
        .collect()
}

/// Registers with the metanode group (again whenever it forgets this node) and sends
/// device usage every heartbeat interval. Failures are logged and retried: the
/// datanode serves extents whether or not a metanode is reachable.
async fn heartbeat_loop(store: Arc<ExtentStore>, id: u64, addr: String, meta: MetaConfig) {
    let period = Duration::from_millis(meta.heartbeat_ms);
    let c = MetaClient::with_deadline(meta.addrs.clone(), period.max(Duration::from_secs(2)));
    let mut registered = false;
    loop {
        if !registered {
            let r = RegisterNode {
                id,
                addr: addr.clone(),
                zone: meta.zone.clone(),
                rack: meta.rack.clone(),
                devices: devices(&store),
            };
            match c.register_node(&r).await {
                Ok(_) => {
                    tracing::info!("registered with the metanode as datanode {id} at {addr}");
                    registered = true;
                }
                Err(e) => tracing::warn!("registering with the metanode failed: {e}"),
            }
        } else {
            match c.heartbeat(&Heartbeat { id, devices: devices(&store) }).await {
                Ok(()) => {}
                Err(MetaError::NoSuchNode { .. }) => registered = false,
                Err(e) => tracing::warn!("heartbeat to the metanode failed: {e}"),
            }
        }
        tokio::time::sleep(period).await;
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
