//! `gc`: the GC service of a cluster (`gc run`), its status (`gc status`) and a check
//! of the catalog's extent references against its rows (`gc audit`).
//!
//! The engine is the `gc` crate; this binary lives in the `ogw` package because the
//! catalog it works on is the gateway's (and `ogw standalone` runs the same engine).
//! Settings come from flags, else from a TOML file (`--config`), else the defaults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use client::MetaClient;
use ogw::catalog::{Catalog, GcCatalog};
use ogw::db::Db;
use ogw::secrets::MasterKey;
use serde::Deserialize;

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

/// The TOML file's keys (all optional; flags win).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    db: Option<String>,
    #[serde(default)]
    meta: Vec<String>,
    name: Option<String>,
    grace: Option<String>,
    interval: Option<String>,
    upload_age: Option<String>,
    compact_below: Option<String>,
    lifecycle_day: Option<String>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let cli = Cli::parse();
    if let Err(e) = rt.block_on(run(cli.cmd, cli.secrets)) {
        eprintln!("gc: error: {e:#}");
        std::process::exit(2);
    }
}

async fn catalog(url: &str) -> anyhow::Result<Catalog> {
    Ok(Catalog { db: Db::connect(url).await?, key: MasterKey::ephemeral() })
}

async fn run(cmd: Cmd, secrets: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    match cmd {
        Cmd::Run(a) => {
            client::present_client_secret("gc", secrets.as_deref())?;
            let (db, meta, cfg) = settings(a)?;
            let c = catalog(&db).await?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let gc = gc::Gc::new(GcCatalog(c), MetaClient::new(meta), cfg);
            let task = tokio::spawn(gc.run(stop_rx));
            // Tests and scripts wait for this line.
            println!("gc running");
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
            let wrong = ogw::catalog::audit_refs(&c.db).await?;
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

/// Flags over the file over the defaults; a missing db or metanode list is an error.
fn settings(a: RunArgs) -> anyhow::Result<(String, Vec<String>, gc::Config)> {
    let file: File = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("{}", p.display()))?
        }
        None => File::default(),
    };
    let dur = |flag: Option<Duration>, key: &str, v: &Option<String>| -> anyhow::Result<Option<Duration>> {
        match (flag, v) {
            (Some(d), _) => Ok(Some(d)),
            (None, Some(s)) => gc::parse_duration(s).map(Some).map_err(|e| anyhow::anyhow!("{key}: {e}")),
            (None, None) => Ok(None),
        }
    };
    let db = a.db.or(file.db).context("no catalog: give --db or db in the config file")?;
    let meta = if a.meta.is_empty() { file.meta } else { a.meta };
    if meta.is_empty() {
        bail!("no metanode: give --meta or meta in the config file");
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let name = a.name.or(file.name).unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id()));
    let mut cfg = gc::Config::cluster(name);
    if let Some(d) = dur(a.grace, "grace", &file.grace)? {
        cfg.grace = d;
    }
    if let Some(d) = dur(a.interval, "interval", &file.interval)? {
        cfg.interval = d;
    }
    if let Some(d) = dur(a.upload_age, "upload_age", &file.upload_age)? {
        cfg.upload_age = d;
    }
    if let Some(d) = dur(a.lifecycle_day, "lifecycle_day", &file.lifecycle_day)? {
        cfg.lifecycle_day = d;
    }
    match (a.compact_below, &file.compact_below) {
        (Some(f), _) => cfg.compact_below = f,
        (None, Some(s)) => {
            cfg.compact_below = gc::parse_fraction(s).map_err(|e| anyhow::anyhow!("compact_below: {e}"))?
        }
        (None, None) => {}
    }
    if cfg.interval.is_zero() {
        bail!("interval must be more than 0");
    }
    if cfg.lifecycle_day.is_zero() {
        bail!("lifecycle_day must be more than 0");
    }
    Ok((db, meta, cfg))
}
