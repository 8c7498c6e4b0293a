//! `ogw standalone`: a whole cluster in one process on one machine: an embedded
//! metanode (a one-member Raft group), three datanodes on files, the S3 gateway and
//! SQLite, all under `--data DIR`. For trying Strata and for tests; production runs
//! separate processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use client::MetaClient;
use datanode::config::{Args as DnArgs, Config as DnConfig};
use datanode::extent::ExtentStore;
use datanode::server::Server;
use proto::meta::{NodeState, Policy};
use proto::NodeId;
use rand::distributions::{Alphanumeric, DistString};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::catalog::{Catalog, GcCatalog};
use crate::limits::DATANODES_UP_TIMEOUT;
use crate::secrets::MasterKey;
use crate::server::{self, Options, EC_POLICY_DEFAULT, POLICY_DEFAULT, STREAMS_DEFAULT};

pub struct Standalone {
    pub data: PathBuf,
    pub s3_addr: SocketAddr,
    /// Address of the admin listener (metrics, health, readiness).
    pub admin_addr: SocketAddr,
    /// Size of each datanode's device file (`auto`: from the disk's free space, see
    /// `plan_devices`).
    pub device_size: String,
    pub datanodes: usize,
    /// Zero-fill device files when creating them (faster flushes on most filesystems).
    pub zero_fill: bool,
    /// Catalog database URL; SQLite under `data` when `None`.
    pub db: Option<String>,
    /// Base domains for virtual-host style requests.
    pub domains: Vec<String>,
    /// Policy of STANDARD objects and new buckets' default; replica:3 (narrowed to the
    /// datanodes there are) when `None`.
    pub policy: Option<Policy>,
    /// Policy of the infrequent-access classes; by default the widest of ec:4+2,
    /// ec:2+1 and ec:1+1 that the datanodes can hold.
    pub ec_policy: Option<Policy>,
    /// How the in-process GC runs.
    pub gc: gc::Config,
    /// How the gateway's LogStreams are written.
    pub stream: client::StreamConfig,
    /// S3 connections idle this long are closed.
    pub idle_timeout: Duration,
    /// Serve HTTPS, with a CA and certificate made under `data/tls`.
    pub tls: bool,
    /// Objects of at most this many bytes are kept in their catalog row (0: none).
    pub inline_max: u64,
}

pub const TENANT: &str = "default";

/// `--device-size auto`: new device files take this share of the free space of the data
/// directory's filesystem (the rest stays for the database, logs and everything else)...
pub const AUTO_DISK_SHARE: f64 = 0.5;
/// ...each at most this...
pub const AUTO_DEVICE_MAX: u64 = 64 << 30;
/// ...and at least this: less is refused (a cluster that holds almost nothing). A
/// size given is taken as it is (the datanode checks it).
pub const AUTO_DEVICE_MIN: u64 = 512 << 20;
/// Device files are zero-filled at creation only up to this much in all: beyond it the
/// first start would write zeros for minutes. Larger ones are only reserved
/// (fallocate), and the first write to each region costs a journal commit.
pub const ZERO_FILL_TOTAL_MAX: u64 = 16 << 30;

/// The datanodes' device files: their size, how many are made now, and whether those
/// are zero-filled.
#[derive(Debug, PartialEq, Eq)]
pub struct DevicePlan {
    /// Size of each device file made now (`--device-size`, or from the free space).
    pub size: u64,
    /// Device files to make (those that do not exist yet).
    pub new: usize,
    pub zero_fill: bool,
    /// Every device's bytes once made: those that exist and the new ones.
    pub total: u64,
}

/// Sizes the device files to make, given the size asked for (`auto` or a size like
/// `8G`), the bytes free on the data directory's filesystem, and the sizes of the
/// device files that exist already (`None`: to make). Refuses, saying why, when the
/// disk cannot hold what was asked.
pub fn plan_devices(spec: &str, free: u64, existing: &[Option<u64>], zero_fill: bool) -> anyhow::Result<DevicePlan> {
    let new = existing.iter().filter(|e| e.is_none()).count();
    let have: u64 = existing.iter().flatten().sum();
    let size = if spec.trim().eq_ignore_ascii_case("auto") {
        let share = (free as f64 * AUTO_DISK_SHARE) as u64 / new.max(1) as u64;
        // Whole MiB, so that the figures printed are round.
        let size = share.min(AUTO_DEVICE_MAX) & !((1 << 20) - 1);
        if new > 0 && size < AUTO_DEVICE_MIN {
            bail!(
                "the disk under the data directory has {} free: {new} device files of at least {} each do not                  fit in half of it (free some space, put --data on a larger disk, or give a smaller --device-size)",
                bytes(free),
                bytes(AUTO_DEVICE_MIN)
            );
        }
        size
    } else {
        let size = datanode::config::parse_size(spec).context("--device-size")?;
        let need = size.saturating_mul(new as u64);
        if need > free {
            bail!(
                "--device-size {spec}: {new} new device files of {} need {}, but the disk under the data directory                  has {} free",
                bytes(size),
                bytes(need),
                bytes(free)
            );
        }
        size
    };
    let made = size * new as u64;
    Ok(DevicePlan { size, new, zero_fill: zero_fill && made <= ZERO_FILL_TOTAL_MAX, total: have + made })
}

fn bytes(b: u64) -> String {
    client::status::bytes(b)
}

/// Bytes an unprivileged process may still write on the filesystem holding `path`.
fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).context("a path with a NUL byte")?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs struct to fill, both live for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("statvfs {}", path.display()));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Starts everything, prints the endpoint and credentials, and serves until
/// `shutdown` resolves.
pub async fn run(s: Standalone, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&s.data).with_context(|| format!("creating {}", s.data.display()))?;
    // Everything under it (devices, the database, the keys) is this process's alone.
    std::fs::set_permissions(&s.data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .with_context(|| format!("making {} private", s.data.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut metrics = telemetry::Metrics::new();

    // The cluster's secrets: its own, made at the first start. Everything here talks
    // to the metanode and the datanodes as a node.
    let secrets = s.data.join("cluster.secrets");
    let keyring = load_or_create_secrets(&secrets)?;
    proto::auth::set_default(keyring.credential(proto::auth::Role::Node));

    // The metanode.
    let ml = TcpListener::bind("127.0.0.1:0").await?;
    let maddr = ml.local_addr()?.to_string();
    let mut ms = metanode::Settings::new(1, maddr.clone(), s.data.join("meta"));
    ms.keyring = Some(keyring.clone());
    ms.init = BTreeMap::from([(1, maddr.clone())]);
    let node = metanode::MetaNode::start(ms).await?;
    metrics.registry().register_collector(metanode::metrics::collector(node.clone()));
    let app = metanode::api::router(node.clone());
    let mut rx = stop_rx.clone();
    tokio::spawn(async move {
        telemetry::http::serve(ml, app, metanode::limits::IDLE_TIMEOUT_DEFAULT, None, async move {
            let _ = rx.changed().await;
        })
        .await;
    });

    // The datanodes, on device files sized from the disk (or as asked).
    let devs: Vec<PathBuf> = (1..=s.datanodes).map(|i| s.data.join(format!("datanode{i}.img"))).collect();
    let existing: Vec<Option<u64>> = devs.iter().map(|d| std::fs::metadata(d).ok().map(|m| m.len())).collect();
    let plan = plan_devices(&s.device_size, free_bytes(&s.data)?, &existing, s.zero_fill)?;
    if plan.new > 0 {
        let zeros = if plan.zero_fill {
            ", zero-filling them"
        } else if s.zero_fill {
            " (too large to zero-fill at start)"
        } else {
            ""
        };
        eprintln!("standalone: making {} device files of {}{zeros}", plan.new, bytes(plan.size));
    }
    let mut stores = Vec::new();
    let mut locals = Vec::new();
    for ((i, dev), had) in (1..=s.datanodes as u64).zip(&devs).zip(&existing) {
        let mut args = vec![
            "datanode".to_string(),
            "--node-id".into(),
            i.to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--device".into(),
            // A device file made before keeps its size.
            format!("{}:{}", dev.display(), had.unwrap_or(plan.size)),
            "--meta".into(),
            maddr.clone(),
            "--heartbeat-ms".into(),
            "500".into(),
            "--secrets".into(),
            secrets.display().to_string(),
        ];
        if !plan.zero_fill {
            args.push("--no-zero-fill".into());
        }
        let cfg = DnConfig::from_args(&DnArgs::try_parse_from(&args)?)?;
        let store = {
            let c = cfg.store.clone();
            Arc::new(tokio::task::spawn_blocking(move || ExtentStore::open(&c)).await??)
        };
        let l = TcpListener::bind(cfg.listen).await?;
        let addr = l.local_addr()?.to_string();
        let metanode = cfg.meta.clone().expect("--metanode given");
        tokio::spawn(datanode::scrub::run(store.clone(), NodeId(i), metanode.clone()));
        tokio::spawn(datanode::heartbeat::run(store.clone(), NodeId(i), addr.clone(), metanode));
        let srv = Arc::new(Server::new(store.clone(), NodeId(i)).with_keyring(cfg.keyring.clone()));
        // The gateway, GC and the metanode's repair in this process call the datanode
        // directly (`proto::local`); it listens too, for tools and peers outside.
        locals.push((addr.clone(), srv.serve_locally(&addr)));
        let mut rx = stop_rx.clone();
        tokio::spawn(srv.serve(l, async move {
            let _ = rx.changed().await;
        }));
        stores.push(store);
    }
    let mc = MetaClient::new([maddr.clone()]);
    wait_nodes_up(&mc, s.datanodes).await?;
    let nodes = stores.iter().enumerate().map(|(i, st)| (NodeId(i as u64 + 1), st.clone())).collect();
    metrics.registry().register_collector(datanode::metrics::collector(nodes));

    // The gateway.
    let key = MasterKey::load_or_create(&s.data.join("master.key"))?;
    let db = s.db.clone().unwrap_or_else(|| format!("sqlite://{}", s.data.join("ogw.db").display()));
    // The default policies, narrowed to the datanodes there are.
    let policy = s.policy.unwrap_or(Policy::Replica { n: s.datanodes.min(POLICY_DEFAULT.width()) as u8 });
    let objects = match policy {
        Policy::Replica { n } => plan.total / n.max(1) as u64,
        Policy::Ec { k, .. } => plan.total / policy.width() as u64 * k as u64,
    };
    let capacity = format!(
        "Capacity:     {} on {} device files: about {} of objects at {policy} ({} free on the disk)\n",
        bytes(plan.total),
        s.datanodes,
        bytes(objects),
        bytes(free_bytes(&s.data)?),
    );
    let ec_default = [EC_POLICY_DEFAULT, Policy::Ec { k: 2, m: 1 }].into_iter().find(|p| p.width() <= s.datanodes);
    let (svc, catalog) = server::build(
        Options {
            metanodes: vec![maddr.clone()],
            db,
            master_key: key,
            name: "standalone".into(),
            streams: STREAMS_DEFAULT,
            policy,
            ec_policy: s.ec_policy.or(ec_default).unwrap_or(Policy::Ec { k: 1, m: 1 }),
            domains: s.domains.clone(),
            stream: s.stream.clone(),
            inline_max: s.inline_max,
        },
        &mut metrics,
    )
    .await?;
    let (access, secret) = credentials(&catalog, &s.data.join("access-key")).await?;
    let gc = gc::Gc::new(GcCatalog(catalog.clone()), MetaClient::new([maddr.clone()]), s.gc.clone());
    metrics.registry().register_collector(gc::metrics::collector(gc.status()));
    tokio::spawn(gc.run(stop_rx.clone()));
    let token = match telemetry::token_from_env() {
        Some(t) => t,
        None => load_or_create_token(&s.data.join("metrics-token"))?,
    };
    let al = TcpListener::bind(s.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-addr)", s.admin_addr))?;
    let admin_addr = al.local_addr()?;
    let app = crate::admin::router(Arc::new(metrics), Some(token), catalog.clone(), vec![maddr.clone()]);
    // Where `strata status --data DIR` finds this cluster.
    std::fs::write(s.data.join("endpoints.toml"), format!("metanode = \"{maddr}\"\nadmin = \"http://{admin_addr}\"\n"))
        .context("writing endpoints.toml")?;
    let mut rx = stop_rx.clone();
    tokio::spawn(crate::admin::serve(al, app, async move {
        let _ = rx.changed().await;
    }));
    let l = TcpListener::bind(s.s3_addr).await.with_context(|| format!("cannot listen on {}", s.s3_addr))?;
    let (tls, endpoint, trust) = if s.tls {
        let names = vec!["localhost".to_string(), "127.0.0.1".into(), s.s3_addr.ip().to_string()];
        let (cert, key, ca) = crate::tls::self_signed(&s.data.join("tls"), &names)?;
        let certs = crate::tls::Certs::load(&cert, &key)?;
        certs.reload_on_sighup()?;
        let trust = format!("CA bundle:    {} (e.g. AWS_CA_BUNDLE)\n", ca.display());
        (Some(certs.acceptor()), format!("https://{}", l.local_addr()?), trust)
    } else {
        (None, format!("http://{}", l.local_addr()?), String::new())
    };
    // Printed once; a closed stdout (the reader went away) must not stop the service.
    let banner = format!(
        "Strata standalone is up: metanode {maddr}, {} datanodes, data in {}\n\
         S3 endpoint:  {endpoint}\n\
         {capacity}\
         {trust}\
         Admin:        http://{admin_addr} (console at /console and /metrics, with the token in {}; /health, /ready)\n\
         Access key:   {access}\n\
         Secret key:   {secret}\n\
         Try: AWS_ACCESS_KEY_ID={access} AWS_SECRET_ACCESS_KEY={secret} aws --endpoint-url {endpoint} s3 mb s3://demo\n",
        s.datanodes,
        s.data.display(),
        s.data.join("metrics-token").display(),
    );
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    server::serve(l, svc, s.idle_timeout, tls, shutdown).await;
    let _ = stop_tx.send(true);
    // Before the stores close: nothing in this process calls them directly after.
    for (addr, registration) in locals {
        proto::local::unregister(&addr, registration);
    }
    node.raft.shutdown().await.ok();
    for st in stores {
        tokio::task::spawn_blocking(move || st.shutdown()).await?;
    }
    Ok(())
}

/// The metrics token under the data directory, made (mode 0600) if missing.
fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    if let Ok(t) = std::fs::read_to_string(path) {
        let t = t.trim();
        if !t.is_empty() {
            return Ok(t.to_string());
        }
    }
    let t = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(format!("{t}\n").as_bytes())?;
    Ok(t)
}

/// The secrets file under the data directory, made (mode 0600) if missing.
fn load_or_create_secrets(path: &Path) -> anyhow::Result<proto::auth::Keyring> {
    if !path.exists() {
        proto::auth::Keyring::generate()
            .write_new(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    Ok(proto::auth::Keyring::load(path)?)
}

async fn wait_nodes_up(mc: &MetaClient, n: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    loop {
        if let Ok(nodes) = mc.nodes().await {
            if nodes.iter().filter(|x| x.state == NodeState::Up).count() >= n {
                return Ok(());
            }
        }
        if t.elapsed() > DATANODES_UP_TIMEOUT {
            bail!("the datanodes did not register with the metanode within {} s", DATANODES_UP_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The default tenant's credentials: from STRATA_ACCESS_KEY / STRATA_SECRET_KEY when
/// set (added if new), else the key made on the first start, else a new random one.
async fn credentials(catalog: &Catalog, remembered: &Path) -> anyhow::Result<(String, String)> {
    if !catalog.tenant_exists(TENANT).await? {
        catalog.create_tenant(TENANT).await?;
    }
    let env = (std::env::var("STRATA_ACCESS_KEY").ok(), std::env::var("STRATA_SECRET_KEY").ok());
    match env {
        (Some(a), Some(s)) => {
            match catalog.key(&a).await? {
                Some((t, old)) if t == TENANT && old == s => {}
                Some(_) => bail!("access key {a} exists with another secret or tenant"),
                None => catalog.add_key(TENANT, &a, &s).await?,
            }
            Ok((a, s))
        }
        (None, None) => {
            // The access key made on the first start (its secret stays sealed in the
            // database).
            if let Ok(a) = std::fs::read_to_string(remembered) {
                let a = a.trim().to_string();
                if let Some((_, s)) = catalog.key(&a).await? {
                    return Ok((a, s));
                }
            }
            let mut rng = rand::thread_rng();
            let a = format!("STRATA{}", Alphanumeric.sample_string(&mut rng, 14).to_uppercase());
            let s = Alphanumeric.sample_string(&mut rng, 40);
            catalog.add_key(TENANT, &a, &s).await?;
            std::fs::write(remembered, format!("{a}\n"))?;
            Ok((a, s))
        }
        _ => bail!("set both STRATA_ACCESS_KEY and STRATA_SECRET_KEY, or neither"),
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;

    const G: u64 = 1 << 30;

    #[test]
    fn auto_takes_half_the_free_space_shared_among_new_devices() {
        let p = plan_devices("auto", 60 * G, &[None, None, None], true).unwrap();
        assert_eq!((p.size, p.new, p.total), (10 * G, 3, 30 * G));
        assert!(!p.zero_fill, "30 GiB is too much to zero-fill at start");
        let p = plan_devices("auto", 12 * G, &[None, None, None], true).unwrap();
        assert_eq!(p.size, 2 * G);
        assert!(p.zero_fill);
        // A huge disk: 64 GiB each at most.
        assert_eq!(plan_devices("auto", 1 << 50, &[None; 3], false).unwrap().size, AUTO_DEVICE_MAX);
        // Devices that exist keep their size; only the missing one is made.
        let p = plan_devices("AUTO", 8 * G, &[Some(4 * G), None, Some(4 * G)], true).unwrap();
        assert_eq!((p.size, p.new, p.total), (4 * G, 1, 12 * G));
        let p = plan_devices("auto", 10, &[Some(G); 3], true).unwrap();
        assert_eq!((p.new, p.total), (0, 3 * G), "nothing to make: a full disk is no reason to refuse");
    }

    #[test]
    fn a_disk_too_small_for_what_was_asked_is_refused_clearly() {
        let e = plan_devices("auto", G, &[None, None, None], true).unwrap_err().to_string();
        assert!(e.contains("1.0 GiB free") && e.contains("3 device files"), "{e}");
        let e = plan_devices("8G", 20 * G, &[None, None, None], true).unwrap_err().to_string();
        assert!(e.contains("need 24.0 GiB") && e.contains("20.0 GiB free"), "{e}");
        assert!(plan_devices("8G", 20 * G, &[Some(8 * G), None, Some(8 * G)], true).is_ok(), "one new file fits");
        assert_eq!(plan_devices("256M", 20 * G, &[None], true).unwrap().size, 256 << 20, "small, as asked");
        assert!(plan_devices("lots", 20 * G, &[None], true).is_err());
        let p = plan_devices("4G", 20 * G, &[None, None, None], true).unwrap();
        assert_eq!((p.size, p.total, p.zero_fill), (4 * G, 12 * G, true));
    }
}
