//! Datanode configuration: a TOML file and command-line flags (flags win), checked as a
//! whole before anything is opened, with messages that say what to fix.
//!
//! ```toml
//! node_id = 1
//! listen = "127.0.0.1:7100"
//! admin_addr = "127.0.0.1:7180" # /metrics and /health over HTTP (none without it)
//! extent_bytes_max = "256M"
//! io_engine = "auto"          # auto | uring | sync
//! secrets = "/etc/strata/cluster.secrets"
//! tls_cert = "/etc/strata/dn1.pem" # serve TLS (the process also needs STRATA_TLS_CA)
//! tls_key = "/etc/strata/dn1.key"
//!
//! [[device]]
//! path = "data/dev0.img"      # a file (created if missing) or a raw block device
//! size = "4G"                 # size of a file created here
//! cluster_bytes = "1M"
//!
//! backend = "portable"        # portable | spdk (a build with --features spdk)
//! [spdk]                      # the spdk backend's devices (instead of [[device]])
//! aio = ["data/dev0.img:64G"] # AIO bdevs over files or block devices
//! uring = ["data/dev1.img:64G"] # io_uring bdevs over files or block devices
//! config = "nvme.json"        # an SPDK JSON configuration that creates bdevs ...
//! bdevs = ["Nvme0n1"]         # ... and the ones to use
//! mem_mb = 1024
//! hugepages = false
//!
//! [metanode]                  # optional: register with a metanode group and heartbeat
//! addrs = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]
//! advertise = "10.0.0.5:7100" # address clients reach this datanode at (default: listen)
//! zone = "z1"
//! rack = "r7"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use proto::NodeId;
use serde::Deserialize;

use crate::align::IO_UNIT_BYTES;
use crate::blobstore::backend::{BackendConfig, DeviceConfig, SpdkConfig};
use crate::blobstore::cluster_bytes_ok;
use crate::blobstore::io::IoEngineKind;
use crate::extent::StoreConfig;
use crate::limits::{CLUSTER_BYTES_DEFAULT, EXTENT_BYTES_MAX_DEFAULT};

pub const LISTEN_DEFAULT: &str = "127.0.0.1:7100";
pub const DEVICE_BYTES_DEFAULT: u64 = 1 << 30;

#[derive(Debug, Parser)]
#[command(name = "datanode", about = "Strata DataNode: stores extents on local devices")]
pub struct Args {
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long)]
    pub listen: Option<String>,
    /// Address of the admin listener: /metrics (bearer token from STRATA_METRICS_TOKEN
    /// when set) and /health over HTTP. None without it.
    #[arg(long)]
    pub admin_addr: Option<String>,
    #[arg(long)]
    pub node_id: Option<NodeId>,
    /// A device as PATH or PATH:SIZE (size of a file created there, e.g. 4G). Repeat for
    /// several; replaces the config file's devices.
    #[arg(long = "device", value_name = "PATH[:SIZE]")]
    pub devices: Vec<String>,
    /// Cluster size for devices formatted now (power of two, >= 4K).
    #[arg(long)]
    pub cluster_bytes: Option<String>,
    /// Largest logical size of one extent.
    #[arg(long)]
    pub extent_bytes_max: Option<String>,
    /// I/O engine: auto, uring or sync.
    #[arg(long)]
    pub io_engine: Option<IoEngineKind>,
    /// Format existing devices that hold no Strata superblock (erases them).
    #[arg(long)]
    pub format: bool,
    /// Do not zero-fill device files created now (faster start, slower flushes on
    /// filesystems with unwritten extents).
    #[arg(long)]
    pub no_zero_fill: bool,
    /// Metanode addresses (HOST:PORT,...) to register with and heartbeat to (`--meta`,
    /// as every binary names them; `--metanode` is its old name).
    #[arg(long = "meta", alias = "metanode", value_delimiter = ',')]
    pub metanode: Vec<String>,
    /// Address clients reach this datanode at (default: the listen address).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Failure domain: zone label.
    #[arg(long)]
    pub zone: Option<String>,
    /// Failure domain: rack label.
    #[arg(long)]
    pub rack: Option<String>,
    /// Heartbeat interval to the metanode, ms.
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Scrub: bytes per second the background re-read of sealed extents reads at most
    /// (e.g. 16M; 0 turns scrub off). Copies that fail their CRCs are reported to the
    /// metanode, whose repair replaces them.
    #[arg(long)]
    pub scrub_rate: Option<String>,
    /// Scrub: time from the start of one pass over every sealed extent to the next, ms.
    #[arg(long)]
    pub scrub_interval_ms: Option<u64>,
    /// Repair: bytes per second this datanode writes into copies it rebuilds for the
    /// metanode's repair, all rebuilds together (default 32M; 0: no limit).
    #[arg(long)]
    pub rebuild_rate: Option<String>,
    /// Repair: the same while clients append to this datanode (within the last 0.5 s),
    /// so that rebuilds yield to them (default: a quarter of --rebuild-rate; 0: no
    /// limit). Rebuilds read and write the disk that client appends need: on the
    /// benchmark machine, client appends kept 0.42-1.00 of their quiet rate (mean 0.66)
    /// at the full rate, 0.74-1.14 (mean 0.96) at a quarter (BENCHMARKS.md,
    /// `scripts/bench.sh repair`).
    #[arg(long)]
    pub rebuild_rate_busy: Option<String>,
    /// Storage backend: `portable` (files and block devices, the default) or `spdk`
    /// (SPDK's BlobStore on bdevs; needs a binary built with `--features spdk`).
    #[arg(long)]
    pub backend: Option<Backend>,
    /// spdk: an AIO bdev over PATH (a file, created with SIZE if missing, or a block
    /// device), one device each; repeatable.
    #[arg(long = "spdk-aio", value_name = "PATH[:SIZE]")]
    pub spdk_aio: Vec<String>,
    /// spdk: an io_uring bdev over PATH (as --spdk-aio, but submitted through io_uring);
    /// repeatable.
    #[arg(long = "spdk-uring", value_name = "PATH[:SIZE]")]
    pub spdk_uring: Vec<String>,
    /// spdk: an SPDK JSON configuration that creates bdevs (e.g. bdev_nvme_attach_controller
    /// for an NVMe SSD); name the ones to use with --spdk-bdev.
    #[arg(long)]
    pub spdk_config: Option<PathBuf>,
    /// spdk: a bdev of --spdk-config to use as a device; repeatable.
    #[arg(long = "spdk-bdev")]
    pub spdk_bdevs: Vec<String>,
    /// spdk: memory for SPDK's environment, MiB (default 1024).
    #[arg(long)]
    pub spdk_mem_mb: Option<u32>,
    /// spdk: use hugepages (reserved and mounted beforehand) instead of ordinary memory.
    #[arg(long)]
    pub spdk_hugepages: bool,
    /// The cluster secrets file (default: the config's `secrets`, else
    /// $STRATA_SECRETS_FILE, else the STRATA_*_SECRET variables). Without secrets the
    /// datanode listens on loopback only.
    #[arg(long)]
    pub secrets: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM; default: the config's `tls_cert`,
    /// else $STRATA_TLS_CERT). Its own links then need $STRATA_TLS_CA.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM; default: the config's `tls_key`, else
    /// $STRATA_TLS_KEY).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Portable,
    Spdk,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<NodeId>,
    listen: Option<String>,
    admin_addr: Option<String>,
    extent_bytes_max: Option<Size>,
    io_engine: Option<IoEngineKind>,
    #[serde(default)]
    device: Vec<FileDevice>,
    metanode: Option<FileMeta>,
    backend: Option<Backend>,
    spdk: Option<FileSpdk>,
    rebuild_rate: Option<Size>,
    rebuild_rate_busy: Option<Size>,
    secrets: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// The spdk backend's devices, from flags or from the file's `[spdk]` (flags win).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpdk {
    #[serde(default)]
    aio: Vec<String>,
    #[serde(default)]
    uring: Vec<String>,
    config: Option<PathBuf>,
    #[serde(default)]
    bdevs: Vec<String>,
    mem_mb: Option<u32>,
    hugepages: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMeta {
    #[serde(default)]
    addrs: Vec<String>,
    advertise: Option<String>,
    zone: Option<String>,
    rack: Option<String>,
    heartbeat_ms: Option<u64>,
    scrub_rate: Option<Size>,
    scrub_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDevice {
    path: PathBuf,
    size: Option<Size>,
    cluster_bytes: Option<Size>,
}

/// A byte count written as a number or a string like "64M", "1G", "4KiB".
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum Size {
    Bytes(u64),
    Text(#[serde(deserialize_with = "de_size")] u64),
}

impl Size {
    fn get(self) -> u64 {
        match self {
            Size::Bytes(b) | Size::Text(b) => b,
        }
    }
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    parse_size(&s).map_err(serde::de::Error::custom)
}

/// A device given as `PATH[:SIZE]` to `flag`: its path, and the size of a file created
/// there.
fn path_and_size(flag: &str, d: &str) -> anyhow::Result<(PathBuf, u64)> {
    match d.rsplit_once(':') {
        Some((p, s)) => Ok((PathBuf::from(p), parse_size(s).with_context(|| format!("{flag} '{d}'"))?)),
        None => Ok((PathBuf::from(d), DEVICE_BYTES_DEFAULT)),
    }
}

pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().with_context(|| format!("'{s}' is not a size like 4096, 64M or 1G"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => bail!("'{s}' has an unknown unit (use K, M, G or T)"),
    };
    n.checked_mul(1 << shift).with_context(|| format!("'{s}' is too large"))
}

#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: NodeId,
    pub listen: SocketAddr,
    /// The admin listener's address (metrics, health), if any.
    pub admin_addr: Option<SocketAddr>,
    pub store: StoreConfig,
    /// Registration with a metanode group, if configured.
    pub meta: Option<MetaConfig>,
    /// Bytes per second rebuilds may write (0: no limit).
    pub rebuild_rate: u64,
    pub rebuild_rate_busy: u64,
    /// The cluster secrets peers must prove they hold (`None`: anyone may connect,
    /// refused unless `listen` is a loopback address).
    pub keyring: Option<proto::auth::Keyring>,
    /// The certificate served to peers (`None`: plain TCP).
    pub tls: Option<Arc<proto::tls::Certs>>,
}

#[derive(Debug, Clone)]
pub struct MetaConfig {
    pub addrs: Vec<String>,
    /// None: the address actually bound (so port 0 works).
    pub advertise: Option<String>,
    pub zone: String,
    pub rack: String,
    pub heartbeat_ms: u64,
    /// Scrub's read rate, bytes per second (0: no scrub).
    pub scrub_rate: u64,
    /// Scrub's time between pass starts.
    pub scrub_interval: std::time::Duration,
}

impl Config {
    pub fn from_args(args: &Args) -> anyhow::Result<Config> {
        let file = match &args.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?;
                toml::from_str::<FileConfig>(&text).with_context(|| format!("config file {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let listen_text = args.listen.clone().or(file.listen).unwrap_or_else(|| LISTEN_DEFAULT.into());
        let listen: SocketAddr = listen_text
            .parse()
            .with_context(|| format!("listen address '{listen_text}' is not IP:PORT (e.g. 127.0.0.1:7100)"))?;
        let admin_addr = match args.admin_addr.clone().or(file.admin_addr) {
            None => None,
            Some(a) => Some(
                a.parse::<SocketAddr>()
                    .with_context(|| format!("admin address '{a}' is not IP:PORT (e.g. 127.0.0.1:7180)"))?,
            ),
        };
        let cluster_flag = args.cluster_bytes.as_deref().map(parse_size).transpose().context("--cluster-bytes")?;
        let mut devices = Vec::new();
        if !args.devices.is_empty() {
            for d in &args.devices {
                let (path, create_bytes) = path_and_size("--device", d)?;
                devices.push(DeviceConfig {
                    path,
                    create_bytes,
                    cluster_bytes: cluster_flag.unwrap_or(CLUSTER_BYTES_DEFAULT),
                });
            }
        } else {
            for d in file.device {
                devices.push(DeviceConfig {
                    path: d.path,
                    create_bytes: d.size.map_or(DEVICE_BYTES_DEFAULT, Size::get),
                    cluster_bytes: cluster_flag.or(d.cluster_bytes.map(Size::get)).unwrap_or(CLUSTER_BYTES_DEFAULT),
                });
            }
        }
        let fs = file.spdk.unwrap_or_default();
        let spdk_flags = FileSpdk {
            aio: if args.spdk_aio.is_empty() { fs.aio } else { args.spdk_aio.clone() },
            uring: if args.spdk_uring.is_empty() { fs.uring } else { args.spdk_uring.clone() },
            config: args.spdk_config.clone().or(fs.config),
            bdevs: if args.spdk_bdevs.is_empty() { fs.bdevs } else { args.spdk_bdevs.clone() },
            mem_mb: args.spdk_mem_mb.or(fs.mem_mb),
            hugepages: Some(args.spdk_hugepages || fs.hugepages.unwrap_or(false)),
        };
        let spdk = match args.backend.or(file.backend).unwrap_or(Backend::Portable) {
            Backend::Portable => {
                if !spdk_flags.aio.is_empty()
                    || !spdk_flags.uring.is_empty()
                    || spdk_flags.config.is_some()
                    || !spdk_flags.bdevs.is_empty()
                {
                    bail!("--spdk-aio, --spdk-uring, --spdk-config and --spdk-bdev (or [spdk]) need --backend spdk");
                }
                None
            }
            Backend::Spdk => {
                if !cfg!(feature = "spdk") {
                    bail!(
                        "--backend spdk: this datanode was built without SPDK; build it with \
                         `cargo build --release -p datanode --features spdk` against an SPDK installation \
                         (SPDK_DIR, see README)"
                    );
                }
                if !devices.is_empty() {
                    bail!("--device and [[device]] are for the portable backend; with --backend spdk use --spdk-aio, --spdk-uring or --spdk-bdev");
                }
                Some(spdk_config(&spdk_flags, cluster_flag.unwrap_or(CLUSTER_BYTES_DEFAULT))?)
            }
        };
        if devices.is_empty() && spdk.is_none() {
            bail!("no devices: give --device PATH[:SIZE] or [[device]] entries in the config file");
        }
        for (i, d) in devices.iter().enumerate() {
            if devices[..i].iter().any(|o| o.path == d.path) {
                bail!("device {} is listed twice", d.path.display());
            }
            if !cluster_bytes_ok(d.cluster_bytes) {
                bail!(
                    "cluster size {} of {} must be a power of two of at least {IO_UNIT_BYTES}",
                    d.cluster_bytes,
                    d.path.display()
                );
            }
            if d.create_bytes < 4 * d.cluster_bytes {
                bail!("device size {} of {} is too small (at least 4 clusters)", d.create_bytes, d.path.display());
            }
        }
        let extent_bytes_max = match &args.extent_bytes_max {
            Some(s) => parse_size(s).context("--extent-bytes-max")?,
            None => file.extent_bytes_max.map_or(EXTENT_BYTES_MAX_DEFAULT, Size::get),
        };
        if extent_bytes_max == 0 {
            bail!("extent_bytes_max must be positive");
        }
        let fm = file.metanode.unwrap_or_default();
        let addrs = if args.metanode.is_empty() { fm.addrs } else { args.metanode.clone() };
        let meta = if addrs.is_empty() {
            None
        } else {
            for a in &addrs {
                if !a.contains(':') {
                    bail!("metanode address '{a}' is not HOST:PORT");
                }
            }
            let heartbeat_ms = args.heartbeat_ms.or(fm.heartbeat_ms).unwrap_or(1000);
            if heartbeat_ms == 0 {
                bail!("heartbeat_ms must be positive");
            }
            let scrub_rate = match &args.scrub_rate {
                Some(s) => parse_size(s).context("--scrub-rate")?,
                None => fm.scrub_rate.map_or(crate::limits::SCRUB_RATE_DEFAULT, Size::get),
            };
            let scrub_interval = args
                .scrub_interval_ms
                .or(fm.scrub_interval_ms)
                .map_or(crate::limits::SCRUB_INTERVAL_DEFAULT, std::time::Duration::from_millis);
            Some(MetaConfig {
                addrs,
                advertise: args.advertise.clone().or(fm.advertise),
                zone: args.zone.clone().or(fm.zone).unwrap_or_default(),
                rack: args.rack.clone().or(fm.rack).unwrap_or_default(),
                heartbeat_ms,
                scrub_rate,
                scrub_interval,
            })
        };
        let rebuild_rate = match &args.rebuild_rate {
            Some(s) => parse_size(s).context("--rebuild-rate")?,
            None => file.rebuild_rate.map_or(crate::limits::REBUILD_RATE_DEFAULT, Size::get),
        };
        let rebuild_rate_busy = match &args.rebuild_rate_busy {
            Some(s) => parse_size(s).context("--rebuild-rate-busy")?,
            // A share of the rate, never 0 (no limit) unless the rate is.
            None => file.rebuild_rate_busy.map_or(
                if rebuild_rate == 0 { 0 } else { (rebuild_rate / crate::limits::REBUILD_BUSY_SHARE).max(1) },
                Size::get,
            ),
        };
        let keyring = proto::auth::Keyring::from_env_or(args.secrets.as_deref().or(file.secrets.as_deref()))?;
        match &keyring {
            None if !proto::auth::loopback_only(&listen) => {
                bail!("{}", proto::auth::no_secrets_refusal("datanode", &listen))
            }
            Some(k) if !k.has(proto::auth::Role::Node) => bail!(
                "the cluster secrets hold no node secret, which a datanode registers with and rebuilds from its peers with"
            ),
            _ => {}
        }
        let tls = proto::tls::Certs::from_flags_or_env(
            args.tls_cert.as_deref().or(file.tls_cert.as_deref()),
            args.tls_key.as_deref().or(file.tls_key.as_deref()),
        )?;
        match proto::tls::client().map_err(anyhow::Error::msg)? {
            None if tls.is_some() => bail!(
                "this datanode serves TLS but its own links (heartbeats, rebuilds) would run in clear: set {} to \
                 the cluster's CA bundle",
                proto::tls::CA_ENV
            ),
            _ => {}
        }
        Ok(Config {
            rebuild_rate,
            rebuild_rate_busy,
            keyring,
            tls,
            node_id: args.node_id.or(file.node_id).unwrap_or(NodeId(1)),
            listen,
            admin_addr,
            meta,
            store: StoreConfig {
                backend: BackendConfig {
                    devices,
                    spdk,
                    format_existing: args.format,
                    zero_fill: !args.no_zero_fill,
                    engine: args.io_engine.or(file.io_engine).unwrap_or(IoEngineKind::Auto),
                },
                extent_bytes_max,
                append_bytes_max: proto::APPEND_BYTES_MAX,
            },
        })
    }
}

/// The SPDK backend's configuration from the flags: AIO and io_uring bdevs over files
/// (created as needed) and the bdevs of a JSON configuration.
fn spdk_config(args: &FileSpdk, cluster_bytes: u64) -> anyhow::Result<SpdkConfig> {
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut bdevs = Vec::new();
    let mut fresh = Vec::new();
    let mut file_bdevs = Vec::new();
    let mut subsystems: Vec<serde_json::Value> = Vec::new();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("--spdk-config {}", path.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("--spdk-config {}: not JSON", path.display()))?;
        let subs = v.get("subsystems").and_then(|s| s.as_array()).with_context(|| {
            format!("--spdk-config {}: expected {{\"subsystems\": [...]}} as SPDK writes it", path.display())
        })?;
        subsystems.extend(subs.iter().cloned());
        if args.bdevs.is_empty() {
            bail!("--spdk-config needs --spdk-bdev NAME for each bdev to use");
        }
    } else if !args.bdevs.is_empty() {
        bail!("--spdk-bdev names bdevs of --spdk-config, which is missing");
    }
    bdevs.extend(args.bdevs.iter().cloned());
    let file_args = args.aio.iter().map(|d| ("aio", d)).chain(args.uring.iter().map(|d| ("uring", d)));
    for (i, (kind, d)) in file_args.enumerate() {
        let (path, size) = path_and_size(&format!("--spdk-{kind}"), d)?;
        let name = format!("{kind}{i}");
        if !path.exists() {
            let f = {
                use std::os::unix::fs::OpenOptionsExt;
                let mut o = std::fs::OpenOptions::new();
                o.write(true).create(true).truncate(true).mode(0o600);
                o.open(&path).with_context(|| format!("creating {}", path.display()))?
            };
            f.set_len(size).with_context(|| format!("sizing {}", path.display()))?;
            fresh.push(name.clone());
        }
        entries.push(serde_json::json!({"method": format!("bdev_{kind}_create"),
            "params": {"name": name, "filename": path, "block_size": 4096}}));
        file_bdevs.push((name.clone(), path));
        bdevs.push(name);
    }
    if bdevs.is_empty() {
        bail!(
            "--backend spdk needs devices: --spdk-aio or --spdk-uring PATH[:SIZE], or --spdk-config FILE with --spdk-bdev NAME"
        );
    }
    if !entries.is_empty() {
        subsystems.push(serde_json::json!({"subsystem": "bdev", "config": entries}));
    }
    Ok(SpdkConfig {
        json: serde_json::json!({ "subsystems": subsystems }).to_string(),
        bdevs,
        fresh,
        files: file_bdevs,
        mem_mb: args.mem_mb.unwrap_or(1024),
        hugepages: args.hugepages.unwrap_or(false),
        cluster_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Args {
        Args::parse_from(std::iter::once("datanode").chain(v.iter().copied()))
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn flags_make_a_config_and_bad_ones_say_why() {
        let c = Config::from_args(&args(&["--device", "/tmp/a.img:64M", "--listen", "127.0.0.1:0"])).unwrap();
        assert_eq!(c.store.backend.devices[0].create_bytes, 64 << 20);
        let err = |v: &[&str]| format!("{:#}", Config::from_args(&args(v)).unwrap_err());
        assert!(err(&[]).contains("no devices"));
        assert!(err(&["--device", "/a", "--listen", "nope"]).contains("not IP:PORT"));
        assert!(err(&["--device", "/a:12Q"]).contains("unknown unit"));
        assert!(err(&["--device", "/a", "--device", "/a"]).contains("listed twice"));
        assert!(err(&["--device", "/a", "--cluster-bytes", "5000"]).contains("power of two"));
        assert!(err(&["--device", "/a", "--spdk-aio", "/b"]).contains("need --backend spdk"));
    }

    #[test]
    fn rebuilds_yield_to_client_appends_by_default() {
        let c = |v: &[&str]| {
            let base = ["--device", "/tmp/a.img:64M", "--listen", "127.0.0.1:0"];
            let c = Config::from_args(&args(&[&base[..], v].concat())).unwrap();
            (c.rebuild_rate, c.rebuild_rate_busy)
        };
        assert_eq!(c(&[]), (32 << 20, 8 << 20));
        assert_eq!(c(&["--rebuild-rate", "64M"]), (64 << 20, 16 << 20));
        assert_eq!(c(&["--rebuild-rate", "64M", "--rebuild-rate-busy", "64M"]), (64 << 20, 64 << 20));
        assert_eq!(c(&["--rebuild-rate", "0"]), (0, 0), "no limit stays no limit");
        assert_eq!(c(&["--rebuild-rate", "3"]), (3, 1), "a limit stays a limit");
    }

    #[test]
    fn the_spdk_backend_is_configured_or_refused_clearly() {
        let err = |v: &[&str]| format!("{:#}", Config::from_args(&args(v)).unwrap_err());
        if !cfg!(feature = "spdk") {
            assert!(err(&["--backend", "spdk", "--spdk-aio", "/x"]).contains("built without SPDK"));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.img");
        let c =
            Config::from_args(&args(&["--backend", "spdk", "--spdk-aio", &format!("{}:64M", f.display())])).unwrap();
        let s = c.store.backend.spdk.expect("spdk config");
        assert_eq!((s.bdevs.clone(), s.fresh.clone()), (vec!["aio0".to_string()], vec!["aio0".to_string()]));
        assert!(s.json.contains("bdev_aio_create") && s.json.contains("a.img"), "{}", s.json);
        assert_eq!(std::fs::metadata(&f).unwrap().len(), 64 << 20, "the file is created at its size");
        assert_eq!(s.files, vec![("aio0".to_string(), f.clone())], "flushed by fdatasync of its file");
        // An io_uring bdev beside it: its own name, and flushed the same way.
        let u = dir.path().join("u.img");
        let c = Config::from_args(&args(&[
            "--backend",
            "spdk",
            "--spdk-aio",
            f.to_str().unwrap(),
            "--spdk-uring",
            &format!("{}:32M", u.display()),
        ]))
        .unwrap();
        let s = c.store.backend.spdk.expect("spdk config");
        assert_eq!((s.bdevs.clone(), s.fresh.clone()), (vec!["aio0".into(), "uring1".into()], vec!["uring1".into()]));
        assert!(s.json.contains("bdev_uring_create") && s.json.contains("u.img"), "{}", s.json);
        assert_eq!(s.files.len(), 2);
        assert!(err(&["--spdk-uring", "/u"]).contains("need --backend spdk"));
        assert!(err(&["--backend", "spdk"]).contains("needs devices"));
        assert!(err(&["--backend", "spdk", "--device", "/a"])
            .contains("--device and [[device]] are for the portable backend"));
        assert!(err(&["--backend", "spdk", "--spdk-bdev", "Nvme0n1"]).contains("--spdk-config, which is missing"));
        // The same from a config file's [spdk] table; a flag replaces the file's list.
        let toml = dir.path().join("dn.toml");
        let g = dir.path().join("b.img");
        std::fs::write(&toml, format!("backend = \"spdk\"\n[spdk]\naio = [\"{}:32M\"]\nmem_mb = 512\n", g.display()))
            .unwrap();
        let c = Config::from_args(&args(&["--config", toml.to_str().unwrap()])).unwrap();
        let s = c.store.backend.spdk.expect("spdk from the file");
        assert_eq!((s.mem_mb, s.bdevs.len()), (512, 1));
        assert!(s.json.contains("b.img"));
        let c =
            Config::from_args(&args(&["--config", toml.to_str().unwrap(), "--spdk-aio", f.to_str().unwrap()])).unwrap();
        assert!(c.store.backend.spdk.unwrap().json.contains("a.img"), "the flag wins");
        let j = dir.path().join("bad.json");
        std::fs::write(&j, "{\"nope\": 1}").unwrap();
        let e = err(&["--backend", "spdk", "--spdk-config", j.to_str().unwrap(), "--spdk-bdev", "N"]);
        assert!(e.contains("expected {\"subsystems\""), "{e}");
    }

    #[test]
    fn config_file_is_read_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dn.toml");
        std::fs::write(&p, "node_id = 7\nlisten = \"127.0.0.1:0\"\n[[device]]\npath = \"x.img\"\nsize = \"64M\"\n")
            .unwrap();
        let c = Config::from_args(&args(&["--config", p.to_str().unwrap()])).unwrap();
        assert_eq!((c.node_id, c.store.backend.devices[0].create_bytes), (NodeId(7), 64 << 20));
        std::fs::write(&p, "nodeid = 7\n").unwrap();
        let e = format!("{:#}", Config::from_args(&args(&["--config", p.to_str().unwrap()])).unwrap_err());
        assert!(e.contains("unknown field"), "{e}");
    }
}
