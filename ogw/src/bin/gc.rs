//! `gc`: the GC service of a cluster (`gc run`), its status (`gc status`) and a check
//! of the catalog's extent references against its rows (`gc audit`).
//!
//! The engine is the `gc` crate; this binary lives in the `ogw` package because the
//! catalog it works on is the gateway's (and `ogw standalone` runs the same engine).
//! Settings come from flags, then STRATA_* variables, then a TOML file (`run --config`),
//! then the defaults (`proto::config`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use client::MetaClient;
use ogw::catalog::{Catalog, GcCatalog};
use ogw::db::Db;
use ogw::secrets::MasterKey;

#[derive(Parser)]
#[command(name = "gc", about = "Strata's garbage collector: gives the space of deleted data back")]
struct Cli {
    /// `run`: the cluster secrets file, whose client secret GC presents to metanodes
    /// and datanodes (default: $STRATA_SECRETS_FILE, else $STRATA_CLIENT_SECRET).
    #[arg(long, global = true)]
    secrets: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct RunArgs {
    /// TOML file with any of: db, meta (a list), name, grace, interval, upload_age,
    /// compact_below, lifecycle_day.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Catalog database URL (the gateways' --db).
    #[arg(long)]
    db: Option<String>,
    /// Metanode addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    meta: Vec<String>,
    /// This process's name in the lease (default: host name and process id).
    #[arg(long)]
    name: Option<String>,
    /// Time between dooming unnamed data and deleting it (default 1h).
    #[arg(long, value_parser = gc::parse_duration)]
    grace: Option<Duration>,
    /// Time between two passes (default 60s).
    #[arg(long, value_parser = gc::parse_duration)]
    interval: Option<Duration>,
    /// Multipart uploads older than this are aborted (default 7d).
    #[arg(long, value_parser = gc::parse_duration)]
    upload_age: Option<Duration>,
    /// Sealed extents with less than this share of their bytes named are compacted
    /// (default 50%; 0% never compacts).
    #[arg(long, value_parser = gc::parse_fraction)]
    compact_below: Option<f64>,
    /// How long a day lasts for lifecycle rules (default 1d; shorten only to watch
    /// rules work in a test).
    #[arg(long, value_parser = gc::parse_duration)]
    lifecycle_day: Option<Duration>,
    /// Address of the admin listener: /metrics (bearer token from STRATA_METRICS_TOKEN
    /// when set) and /health over HTTP. None without it.
    #[arg(long)]
    admin_addr: Option<std::net::SocketAddr>,
    /// Run one pass now, showing each step's progress, print what it did and exit
    /// (another GC process holding the lease is an error: its passes run already).
    #[arg(long)]
    once: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run GC passes until SIGTERM. Any number may run; one works at a time (a lease).
    Run(RunArgs),
    /// Print the last pass's status as JSON.
    Status {
        #[arg(long)]
        db: String,
    },
    /// Recompute what every row names and compare it with the extent references;
    /// exits 1 listing the extents that differ.
    Audit {
        #[arg(long)]
        db: String,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // Flags, then STRATA_* variables, then `run --config FILE` (proto::config).
    let style = proto::config::Style { commands: &["run", "status", "audit"], no_env: &[], file: true };
    let cli: Cli = proto::config::parse(style);
    if let Err(e) = rt.block_on(run(cli.cmd, cli.secrets)) {
        eprintln!("gc: error: {e:#}");
        proto::exit_now(2);
    }
}

async fn catalog(url: &str) -> anyhow::Result<Catalog> {
    Ok(Catalog::new(Db::connect(url).await?, MasterKey::ephemeral()))
}

async fn run(cmd: Cmd, secrets: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run(a) => {
            client::present_client_secret("gc", secrets.as_deref())?;
            let (admin_addr, once) = (a.admin_addr, a.once);
            let (db, meta, cfg) = settings(a)?;
            let c = catalog(&db).await?;
            if once {
                return pass_once(gc::Gc::new(GcCatalog(c), MetaClient::new(meta), cfg)).await;
            }
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let gc = gc::Gc::new(GcCatalog(c), MetaClient::new(meta), cfg);
            let mut admin = String::new();
            if let Some(addr) = admin_addr {
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} (--admin-addr)"))?;
                let mut metrics = telemetry::Metrics::new();
                metrics.registry().register_collector(gc::metrics::collector(gc.status()));
                let app = axum::Router::new()
                    .route("/health", axum::routing::get(|| async { "ok\n" }))
                    .merge(telemetry::routes(std::sync::Arc::new(metrics), telemetry::token_from_env()));
                // (The address ends the line: tests read it from there.)
                admin = format!("; admin listening on http://{}", l.local_addr()?);
                tokio::spawn(ogw::admin::serve(l, app, std::future::pending()));
            }
            let task = tokio::spawn(gc.run(stop_rx));
            // Tests and scripts wait for this line.
            println!("gc running{admin}");
            client::shutdown_signal().await;
            let _ = stop_tx.send(true);
            task.await?;
        }
        Cmd::Status { db } => {
            let s = catalog(&db).await?.gc_status().await?;
            match s {
                Some(s) => println!("{}", serde_json::to_string_pretty(&s)?),
                None => bail!("no GC pass has run on this catalog yet"),
            }
        }
        Cmd::Audit { db } => {
            let c = catalog(&db).await?;
            let mut bar = client::progress::Bar::new("audit", client::progress::Unit::Count("rows"));
            let wrong = ogw::catalog::audit_refs_with(&c.db, &mut |read, total| {
                bar.show(read as f64, total.saturating_sub(read) as f64, "", read >= total)
            })
            .await?;
            if !wrong.is_empty() {
                for (e, recorded, rows) in &wrong {
                    eprintln!("extent {e}: {recorded} bytes recorded, rows name {rows}");
                }
                bail!("{} extents' references differ from what the rows name", wrong.len());
            }
            println!("extent references match the rows");
        }
    }
    Ok(())
}

/// `gc run --once`: one pass, a progress bar per step.
async fn pass_once(gc: gc::Gc<GcCatalog>) -> anyhow::Result<()> {
    use client::progress::{Bar, Unit};
    // The step drawn, its bar, and whether it was shown finished.
    let bar = parking_lot::Mutex::new(None::<(String, Bar, bool)>);
    let gc = gc.with_progress(Box::new(move |step, done, total| {
        let mut bar = bar.lock();
        if bar.as_ref().is_none_or(|(s, _, _)| s != step) {
            let what = step.rsplit(' ').next().unwrap_or("things");
            let what: &'static str = match what {
                "streams" => "streams",
                "copies" => "copies",
                _ => "extents",
            };
            *bar = Some((step.to_string(), Bar::new(step.to_string(), Unit::Count(what)), false));
        }
        let (_, b, finished) = bar.as_mut().expect("set above");
        if !*finished {
            *finished = done >= total;
            b.show(done as f64, total.saturating_sub(done) as f64, "", *finished);
        }
    }));
    match gc.pass().await? {
        None => bail!("another GC process holds the lease (`gc status` names the last holder); its passes run already"),
        Some(r) => println!(
            "gc pass: doomed {} extents, deleted {} ({} copies, {} reclaimed), compacted {} ({} copied), \
             aborted {} uploads, moved {} objects, deleted {} versions by lifecycle rules",
            r.doomed,
            r.deleted,
            r.copies_deleted,
            client::status::bytes(r.bytes_reclaimed),
            r.compacted,
            client::status::bytes(r.bytes_compacted),
            r.uploads_aborted,
            r.transitioned,
            r.lifecycle_deleted
        ),
    }
    Ok(())
}

/// The settings (flags, then STRATA_* variables, then the file, as `proto::config`
/// merged them) over the defaults; a missing db or metanode list is an error.
fn settings(a: RunArgs) -> anyhow::Result<(String, Vec<String>, gc::Config)> {
    let db = a.db.context("no catalog: give --db, STRATA_DB or db in the config file")?;
    if a.meta.is_empty() {
        bail!("no metanode: give --meta, STRATA_META or meta in the config file");
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name = a.name.unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id()));
    let mut cfg = gc::Config::cluster(name);
    cfg.grace = a.grace.unwrap_or(cfg.grace);
    cfg.interval = a.interval.unwrap_or(cfg.interval);
    cfg.upload_age = a.upload_age.unwrap_or(cfg.upload_age);
    cfg.lifecycle_day = a.lifecycle_day.unwrap_or(cfg.lifecycle_day);
    cfg.compact_below = a.compact_below.unwrap_or(cfg.compact_below);
    if cfg.interval.is_zero() {
        bail!("interval must be more than 0");
    }
    if cfg.lifecycle_day.is_zero() {
        bail!("lifecycle_day must be more than 0");
    }
    Ok((db, a.meta, cfg))
}
