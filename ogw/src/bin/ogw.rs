//! `ogw`: the S3 gateway (`serve`), a whole cluster in one process (`standalone`), and
//! tenant/key administration (`tenant-create`, `key-create`, ...).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ogw::catalog::Catalog;
use ogw::db::Db;
use ogw::secrets::MasterKey;
use ogw::server::{self, Options};
use ogw::standalone::{self, Standalone};
use proto::meta::Policy;
use rand::distributions::{Alphanumeric, DistString};

#[derive(Parser)]
#[command(name = "ogw", about = "Strata's S3 gateway")]
struct Cli {
    /// `serve`: the cluster secrets file, whose client secret the gateway presents to
    /// metanodes and datanodes (default: $STRATA_SECRETS_FILE, else
    /// $STRATA_CLIENT_SECRET). `standalone` makes its own.
    #[arg(long, global = true)]
    secrets: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct DbArgs {
    /// Catalog database (tenants, keys, buckets, objects): sqlite://PATH, postgres://USER:PASS@HOST/DB or mysql://USER:PASS@HOST/DB.
    #[arg(long)]
    db: String,
    /// File holding the 32-byte master key (64 hex digits, mode 600) that seals secrets.
    #[arg(long)]
    master_key: PathBuf,
}

/// How the gateway writes its LogStreams.
#[derive(clap::Args)]
struct StreamArgs {
    /// Extents are sealed and a new one started at this size (e.g. 256M). Smaller
    /// extents give space back sooner after deletes, at the cost of more metadata.
    #[arg(long, default_value = "256M")]
    extent_size: String,
    /// An extent that took no append for this long is sealed, so that GC can collect
    /// what in it was deleted (e.g. 30s; 0s never seals an idle extent).
    #[arg(long, value_parser = gc::parse_duration, default_value = "30s")]
    idle_seal: Duration,
}

impl StreamArgs {
    fn config(&self) -> anyhow::Result<client::StreamConfig> {
        let size = datanode::config::parse_size(&self.extent_size).context("--extent-size")?;
        if size < proto::APPEND_BYTES_MAX as u64 {
            bail!("--extent-size must be at least {} bytes (the largest append)", proto::APPEND_BYTES_MAX);
        }
        let idle_seal = (!self.idle_seal.is_zero()).then_some(self.idle_seal);
        Ok(client::StreamConfig { extent_bytes_max: size, idle_seal, ..Default::default() })
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a whole cluster in this process: a metanode, datanodes on files, the gateway and SQLite.
    Standalone {
        /// TOML file of these settings (keys are the flag names: `listen = "..."`);
        /// flags and STRATA_* variables win over it. See deploy/config/.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Directory for everything (created if missing).
        #[arg(long, default_value = "./data/standalone")]
        data: PathBuf,
        /// Address of the S3 endpoint.
        #[arg(long, default_value = "127.0.0.1:9000")]
        s3_addr: SocketAddr,
        /// Address of the admin listener: /metrics (bearer token in DATA/metrics-token,
        /// or STRATA_METRICS_TOKEN), /health, /ready.
        #[arg(long, default_value = "127.0.0.1:9001")]
        admin_addr: SocketAddr,
        /// Size of each datanode's device file made now, like 8G; `auto`: half the free
        /// space of the disk under --data, shared among them (64G each at most).
        #[arg(long, default_value = "auto")]
        device_size: String,
        #[arg(long, default_value_t = 3)]
        datanodes: usize,
        /// Do not zero-fill new device files (starts faster; flushes may be slower).
        #[arg(long)]
        no_zero_fill: bool,
        /// Catalog database URL instead of SQLite under --data (postgres://..., mysql://...).
        #[arg(long)]
        db: Option<String>,
        /// Base domain for virtual-host style requests (bucket.DOMAIN); repeatable.
        #[arg(long)]
        domain: Vec<String>,
        /// Policy of STANDARD objects and new buckets' default (replica:N or ec:K+M):
        /// replica:1 keeps one copy, as a single-node store does; default: replica:3,
        /// or replica:N with fewer datanodes.
        #[arg(long)]
        policy: Option<Policy>,
        /// Policy of the infrequent-access storage classes (STANDARD_IA, ONEZONE_IA,
        /// INTELLIGENT_TIERING, GLACIER_IR); default: ec:4+2 with 6 or more datanodes,
        /// else ec:2+1 (3 to 5), else ec:1+1.
        #[arg(long)]
        ec_policy: Option<Policy>,
        /// GC: time between dooming unnamed data and deleting it (reads that started
        /// before a delete finish within it) [default: 60s].
        #[arg(long, value_parser = gc::parse_duration)]
        gc_grace: Option<Duration>,
        /// GC: time between two passes [default: 15s].
        #[arg(long, value_parser = gc::parse_duration)]
        gc_interval: Option<Duration>,
        /// GC: multipart uploads older than this are aborted [default: 7d].
        #[arg(long, value_parser = gc::parse_duration)]
        gc_upload_age: Option<Duration>,
        /// GC: sealed extents with less than this share of their bytes still named are
        /// rewritten (compacted); 0% never compacts [default: 50%].
        #[arg(long, value_parser = gc::parse_fraction)]
        gc_compact_below: Option<f64>,
        /// How long a day lasts for lifecycle rules [default: 1d]; shorten it only to
        /// watch rules work in a test.
        #[arg(long, value_parser = gc::parse_duration)]
        lifecycle_day: Option<Duration>,
        #[command(flatten)]
        streams: StreamArgs,
        /// Close S3 connections that send no request (or leave a body idle) this long.
        #[arg(long, default_value = "30s", value_parser = gc::parse_duration)]
        idle_timeout: Duration,
        /// Serve HTTPS with a certificate of a CA made under --data/tls (clients trust
        /// its ca.pem, e.g. AWS_CA_BUNDLE=DATA/tls/ca.pem).
        #[arg(long)]
        tls: bool,
        /// Objects written whole with at most this many bytes are kept in their catalog
        /// row: one commit, no datanode append. 0 keeps none there (while gateways older
        /// than this option still serve the catalog: they refuse such objects); at most
        /// 64 KiB.
        #[arg(long, default_value_t = ogw::limits::INLINE_MAX_DEFAULT, value_parser = clap::value_parser!(u64).range(..=ogw::limits::INLINE_MAX_LIMIT))]
        inline_max: u64,
    },
    /// Serve S3 against a running cluster.
    Serve {
        /// TOML file of these settings (keys are the flag names: `listen = "..."`);
        /// flags and STRATA_* variables win over it. See deploy/config/.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
        /// Metanode addresses, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        meta: Vec<String>,
        #[arg(long, default_value = "0.0.0.0:9000")]
        listen: SocketAddr,
        /// Address of the admin listener: /metrics (bearer token from
        /// STRATA_METRICS_TOKEN when set), /health, /ready. None without it.
        #[arg(long)]
        admin_addr: Option<SocketAddr>,
        /// This gateway's name, unique per gateway: it owns the LogStreams recorded under it.
        #[arg(long)]
        name: String,
        /// LogStreams a body is spread over.
        #[arg(long, default_value_t = server::STREAMS_DEFAULT)]
        streams: usize,
        /// Policy of STANDARD objects and of new buckets' default.
        #[arg(long, default_value_t = server::POLICY_DEFAULT)]
        policy: Policy,
        /// Policy of the infrequent-access storage classes (STANDARD_IA, ONEZONE_IA,
        /// INTELLIGENT_TIERING, GLACIER_IR).
        #[arg(long, default_value_t = server::EC_POLICY_DEFAULT)]
        ec_policy: Policy,
        /// Base domain for virtual-host style requests (bucket.DOMAIN); repeatable.
        #[arg(long)]
        domain: Vec<String>,
        #[command(flatten)]
        stream_args: StreamArgs,
        /// Close S3 connections that send no request (or leave a body idle) this long.
        #[arg(long, default_value = "30s", value_parser = gc::parse_duration)]
        idle_timeout: Duration,
        /// Serve HTTPS on --listen with this PEM certificate chain (leaf first; read
        /// again on SIGHUP).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's PEM private key (read again on SIGHUP).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Objects written whole with at most this many bytes are kept in their catalog
        /// row: one commit, no datanode append. 0 keeps none there (while gateways older
        /// than this option still serve the catalog: they refuse such objects); at most
        /// 64 KiB.
        #[arg(long, default_value_t = ogw::limits::INLINE_MAX_DEFAULT, value_parser = clap::value_parser!(u64).range(..=ogw::limits::INLINE_MAX_LIMIT))]
        inline_max: u64,
    },
    /// Set a bucket's default policy: what objects PUT without a storage class are
    /// written with (e.g. ec:4+2; they then report STANDARD_IA).
    BucketPolicy {
        #[command(flatten)]
        db: DbArgs,
        bucket: String,
        policy: Policy,
    },
    /// Move a bucket's objects to another policy once they are old: "erasure-code
    /// objects older than 30 days" is `bucket-transition BUCKET --after 30d`. GC rewrites
    /// them (copy, then switch the row; hot data replicated, cold data coded). Without
    /// --after or --off, prints the bucket's rules.
    BucketTransition {
        #[command(flatten)]
        db: DbArgs,
        bucket: String,
        /// Age (since last written) at which objects move: 30d, 12h, 90s.
        #[arg(long, value_parser = gc::parse_duration, conflicts_with = "off")]
        after: Option<std::time::Duration>,
        /// The policy they move to.
        #[arg(long, default_value_t = ogw::server::EC_POLICY_DEFAULT)]
        policy: Policy,
        /// The storage class they report afterwards (default: STANDARD for a replica
        /// policy, STANDARD_IA for an erasure-coded one).
        #[arg(long)]
        class: Option<String>,
        /// Only keys under this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Remove the rule of this bucket and prefix.
        #[arg(long)]
        off: bool,
    },
    /// Create the master key file if it does not exist.
    MasterKeyCreate { path: PathBuf },
    /// Create a tenant.
    TenantCreate {
        #[command(flatten)]
        db: DbArgs,
        name: String,
    },
    /// List tenants.
    Tenants {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Create an access key for a tenant (random unless given); prints ACCESS SECRET.
    KeyCreate {
        #[command(flatten)]
        db: DbArgs,
        tenant: String,
        #[arg(long)]
        access_key: Option<String>,
        /// Read from STRATA_SECRET_KEY when set, so it stays out of the process list.
        #[arg(long)]
        secret_key: Option<String>,
    },
    /// Delete an access key. A running gateway that used it in the last second may
    /// still accept it for up to one second more (it keeps a key's secret that long).
    KeyDelete {
        #[command(flatten)]
        db: DbArgs,
        access_key: String,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    // Flags, then STRATA_* variables, then `--config FILE` (proto::config). The S3
    // certificate is not read from STRATA_TLS_CERT, which names a link certificate,
    // nor keys from STRATA_ACCESS_KEY, which standalone's own credentials use.
    let style = proto::config::Style {
        commands: &[
            "serve",
            "standalone",
            "bucket-policy",
            "bucket-transition",
            "tenant-create",
            "tenants",
            "key-create",
            "key-delete",
        ],
        no_env: &["tls-cert", "tls-key", "access-key", "secret-key"],
        file: true,
    };
    let cli: Cli = proto::config::parse(style);
    if let Err(e) = rt.block_on(run(cli.cmd, cli.secrets)) {
        eprintln!("ogw: error: {e:#}");
        proto::exit_now(2);
    }
}

async fn open_catalog(d: &DbArgs) -> anyhow::Result<Catalog> {
    let key = MasterKey::load(&d.master_key)?;
    Ok(Catalog::new(Db::connect(&d.db).await?, key))
}

async fn run(cmd: Cmd, secrets: Option<PathBuf>) -> anyhow::Result<()> {
    match cmd {
        Cmd::Standalone {
            config: _,
            data,
            s3_addr,
            admin_addr,
            device_size,
            datanodes,
            no_zero_fill,
            db,
            domain,
            policy,
            ec_policy,
            gc_grace,
            gc_interval,
            gc_upload_age,
            gc_compact_below,
            lifecycle_day,
            streams,
            idle_timeout,
            tls,
            inline_max,
        } => {
            if datanodes == 0 {
                bail!("--datanodes must be at least 1");
            }
            if !device_size.trim().eq_ignore_ascii_case("auto") {
                datanode::config::parse_size(&device_size).context("--device-size")?;
            }
            if let Some(p) = policy.filter(|p| p.width() > datanodes) {
                bail!("--policy {p} needs {} datanodes; --datanodes is {datanodes}", p.width());
            }
            if let Some(p) = ec_policy.filter(|p| p.width() > datanodes) {
                bail!("--ec-policy {p} needs {} datanodes; --datanodes is {datanodes}", p.width());
            }
            let s = Standalone {
                data,
                s3_addr,
                admin_addr,
                device_size,
                datanodes,
                zero_fill: !no_zero_fill,
                db,
                domains: domain,
                policy,
                ec_policy,
                gc: {
                    let d = gc::Config::standalone();
                    gc::Config {
                        grace: gc_grace.unwrap_or(d.grace),
                        interval: gc_interval.unwrap_or(d.interval),
                        upload_age: gc_upload_age.unwrap_or(d.upload_age),
                        compact_below: gc_compact_below.unwrap_or(d.compact_below),
                        lifecycle_day: lifecycle_day.filter(|d| !d.is_zero()).unwrap_or(d.lifecycle_day),
                        ..d
                    }
                },
                stream: streams.config()?,
                idle_timeout,
                tls,
                inline_max,
            };
            standalone::run(s, client::shutdown_signal()).await?;
        }
        Cmd::Serve {
            config: _,
            db,
            meta,
            listen,
            admin_addr,
            name,
            streams,
            policy,
            ec_policy,
            domain,
            stream_args,
            idle_timeout,
            tls_cert,
            tls_key,
            inline_max,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(c), Some(k)) => {
                    let certs = ogw::tls::Certs::load(&c, &k)?;
                    certs.reload_on_sighup()?;
                    Some(certs.acceptor())
                }
                _ => None,
            };
            let scheme = if tls.is_some() { "https" } else { "http" };
            client::present_client_secret("ogw", secrets.as_deref())?;
            let master_key = MasterKey::load(&db.master_key)?;
            let l =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            let o = Options {
                metanodes: meta,
                db: db.db,
                master_key,
                name,
                streams,
                policy,
                ec_policy,
                domains: domain,
                stream: stream_args.config()?,
                inline_max,
            };
            let metanodes = o.metanodes.clone();
            let mut metrics = telemetry::Metrics::new();
            let (svc, catalog) = server::build(o, &mut metrics).await?;
            let admin = match admin_addr {
                Some(a) => {
                    let al = tokio::net::TcpListener::bind(a)
                        .await
                        .with_context(|| format!("cannot listen on {a} (--admin-addr)"))?;
                    let app = ogw::admin::router(Arc::new(metrics), telemetry::token_from_env(), catalog, metanodes);
                    let addr = al.local_addr()?;
                    tokio::spawn(ogw::admin::serve(al, app, std::future::pending()));
                    format!("admin on http://{addr}; ")
                }
                None => String::new(),
            };
            // Tests and scripts wait for this line; a closed stdout must not stop the service.
            use std::io::Write;
            let mut out = std::io::stdout();
            // (The address ends the line: scripts and tests read it from there.)
            let _ = writeln!(out, "ogw serves {scheme}; {admin}ogw listening on {}", l.local_addr()?)
                .and_then(|()| out.flush());
            server::serve(l, svc, idle_timeout, tls, client::shutdown_signal()).await;
        }
        Cmd::BucketPolicy { db, bucket, policy } => {
            open_catalog(&db).await?.set_bucket_policy(&bucket, policy).await?;
        }
        Cmd::BucketTransition { db, bucket, after, policy, class, prefix, off } => {
            let catalog = open_catalog(&db).await?;
            if off {
                if !catalog.remove_transition(&bucket, &prefix).await? {
                    bail!("bucket {bucket} has no transition rule for prefix {prefix:?}");
                }
            } else if let Some(after) = after {
                let class = class.unwrap_or_else(|| ogw::class::class_of(policy).name().to_string());
                let rule = gc::Transition { bucket, prefix, after, policy, class };
                catalog.set_transition(&rule).await?;
            } else {
                for t in catalog.transitions(Some(&bucket)).await? {
                    println!("{}\t{:?}\t{}s\t{}\t{}", t.bucket, t.prefix, t.after.as_secs(), t.policy, t.class);
                }
            }
        }
        Cmd::MasterKeyCreate { path } => {
            MasterKey::load_or_create(&path)?;
        }
        Cmd::TenantCreate { db, name } => open_catalog(&db).await?.create_tenant(&name).await?,
        Cmd::Tenants { db } => {
            for t in open_catalog(&db).await?.tenants().await? {
                println!("{t}");
            }
        }
        Cmd::KeyCreate { db, tenant, access_key, secret_key } => {
            let mut rng = rand::thread_rng();
            let a = access_key
                .unwrap_or_else(|| format!("STRATA{}", Alphanumeric.sample_string(&mut rng, 14).to_uppercase()));
            let s = secret_key
                .or_else(|| std::env::var("STRATA_SECRET_KEY").ok())
                .unwrap_or_else(|| Alphanumeric.sample_string(&mut rng, 40));
            open_catalog(&db).await?.add_key(&tenant, &a, &s).await?;
            println!("{a} {s}");
        }
        Cmd::KeyDelete { db, access_key } => {
            if !open_catalog(&db).await?.delete_key(&access_key).await? {
                bail!("no access key {access_key}");
            }
        }
    }
    Ok(())
}
