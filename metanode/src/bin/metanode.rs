//! `metanode serve ...` runs one metanode; the other subcommands are the admin CLI,
//! talking to any member of a running group (`--meta host:port,...`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use client::MetaClient;
use metanode::{limits, MetaNode, Settings};
use proto::auth::{self, Keyring, Role};
use proto::meta::{NodeState, Policy, StreamId};
use proto::NodeId;

#[derive(Parser)]
#[command(
    name = "metanode",
    about = "Strata's metanode: serve, or administer a running group",
    after_help = "Cluster secrets (`metanode secrets FILE` makes them) come from --secrets, \
                  STRATA_SECRETS_FILE, or STRATA_CLIENT_SECRET, STRATA_NODE_SECRET and \
                  STRATA_ADMIN_SECRET and STRATA_MEMBER_SECRET. `serve` checks every request against them and refuses to \
                  listen beyond loopback without them; the admin commands sign with the admin \
                  secret (else the client secret)."
)]
struct Cli {
    /// The cluster secrets file (default: $STRATA_SECRETS_FILE, else the STRATA_*_SECRET
    /// variables).
    #[arg(long, global = true)]
    secrets: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Serve {
    /// TOML file of these settings (keys are the flag names: `listen = "..."`); flags
    /// and STRATA_* variables win over it. See deploy/config/metanode.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This member's id (unique in the group, > 0).
    #[arg(long)]
    id: u64,
    /// Address to listen on for peers, clients and datanodes.
    #[arg(long)]
    listen: SocketAddr,
    /// Address others reach this member at (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Directory of the RocksDB store (created if missing).
    #[arg(long)]
    data: PathBuf,
    /// Founding members as ID=HOST:PORT,...; the smallest id initializes the group
    /// once. Omit on a member added later with `metanode add-member`.
    #[arg(long, value_delimiter = ',')]
    init: Vec<String>,
    /// Raft heartbeat interval, ms.
    #[arg(long, default_value_t = limits::HEARTBEAT_MS_DEFAULT)]
    heartbeat_ms: u64,
    /// Raft election timeout range MIN-MAX, ms. A follower that stops hearing from the
    /// leader waits MAX (the leader's lease) plus a random MIN..MAX before it runs.
    #[arg(long, default_value_t = MsRange(limits::ELECTION_MS_DEFAULT))]
    election_ms: MsRange,
    /// A datanode silent this long is marked down, ms.
    #[arg(long, default_value_t = limits::NODE_GRACE_DEFAULT.as_millis() as u64)]
    node_grace_ms: u64,
    /// Snapshot (and purge the log) every this many entries.
    #[arg(long, default_value_t = limits::SNAPSHOT_LOGS_DEFAULT)]
    snapshot_logs: u64,
    /// Seed placement's random choices (tests).
    #[arg(long)]
    placement_seed: Option<u64>,
    /// A datanode down this long has its copies repaired elsewhere, ms.
    #[arg(long, default_value_t = limits::REPAIR_DELAY_DEFAULT.as_millis() as u64)]
    repair_delay_ms: u64,
    /// Repairs in flight at once, cluster-wide (0: no repair).
    #[arg(long, default_value_t = limits::REPAIR_CONCURRENCY_DEFAULT)]
    repair_concurrency: usize,
    /// Repairs writing onto one datanode at once.
    #[arg(long, default_value_t = limits::REPAIRS_PER_NODE_DEFAULT)]
    repair_per_node: usize,
    /// Rebalance while the datanodes' used fractions spread more than this many percent
    /// ((max - min) / max; 0: never).
    #[arg(long, default_value_t = (limits::REBALANCE_THRESHOLD_DEFAULT * 100.0) as u32)]
    rebalance_threshold_pct: u32,
    /// ... and at least this many MiB must move to even them out.
    #[arg(long, default_value_t = limits::REBALANCE_MIN_BYTES_DEFAULT >> 20)]
    rebalance_min_mib: u64,
    /// Close connections that send no request head this long, ms.
    #[arg(long, default_value_t = limits::IDLE_TIMEOUT_DEFAULT.as_millis() as u64)]
    idle_timeout_ms: u64,
    /// Serve HTTPS with this certificate chain (PEM; default $STRATA_TLS_CERT),
    /// reloaded on SIGHUP. Its own links then need $STRATA_TLS_CA.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM; default $STRATA_TLS_KEY).
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

/// A range of milliseconds written `MIN-MAX`.
#[derive(Clone, Copy)]
struct MsRange((u64, u64));

impl std::str::FromStr for MsRange {
    type Err = String;

    fn from_str(s: &str) -> Result<MsRange, String> {
        s.split_once('-')
            .and_then(|(l, h)| Some(MsRange((l.parse().ok()?, h.parse().ok()?))))
            .ok_or_else(|| format!("{s:?} is not MIN-MAX"))
    }
}

impl std::fmt::Display for MsRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0 .0, self.0 .1)
    }
}

// Parsed once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Run a metanode.
    Serve(Serve),
    /// Write a new secrets file (mode 0600) with a fresh secret per role: give each
    /// host the lines of the roles it needs (see README.md, "Cluster secrets").
    Secrets { file: PathBuf },
    /// Print one member's view of the group (no leader needed).
    Status(Target),
    /// Add a metanode (started without --init) as a voter.
    AddMember {
        #[command(flatten)]
        t: Target,
        id: u64,
        addr: String,
    },
    /// Remove a voter.
    RemoveMember {
        #[command(flatten)]
        t: Target,
        id: u64,
    },
    /// Replace voter OLD by a new member ID at ADDR (add, then remove).
    ReplaceMember {
        #[command(flatten)]
        t: Target,
        old: u64,
        id: u64,
        addr: String,
    },
    /// List datanodes.
    Nodes(Target),
    /// Forget a datanode that holds no copy any more (drained, or lost for good and
    /// repaired); refused while it holds one.
    RemoveNode {
        #[command(flatten)]
        t: Target,
        id: NodeId,
    },
    /// What repair sees and does: degraded extents by policy and copies missing,
    /// copies waiting and in flight, totals. With --wait, shows progress until every
    /// copy due is repaired.
    Repairs {
        #[command(flatten)]
        t: Target,
        #[arg(long)]
        wait: bool,
    },
    /// Drain a datanode: every copy moves off it. With --wait, shows progress until it
    /// is empty (then `remove-node` lets it go).
    Drain {
        #[command(flatten)]
        t: Target,
        id: NodeId,
        #[arg(long)]
        wait: bool,
    },
    /// Rebalancing: `start` (let it run), `stop` (pause; kept across restarts and
    /// leader changes) or `status`. With --wait, `start` and `status` show progress until
    /// the datanodes are even.
    Rebalance {
        #[command(flatten)]
        t: Target,
        action: String,
        #[arg(long)]
        wait: bool,
    },
    /// Set a datanode's state: up, down or draining.
    NodeState {
        #[command(flatten)]
        t: Target,
        id: NodeId,
        state: String,
    },
    /// List streams, or show one with its extents.
    Streams {
        #[command(flatten)]
        t: Target,
        id: Option<StreamId>,
    },
    /// Create a stream with a policy (replica:N or ec:K+M).
    CreateStream {
        #[command(flatten)]
        t: Target,
        policy: Policy,
    },
    /// Benchmark: the state machine's cost per allocation as one stream grows to
    /// EXTENTS, on a new RocksDB in DIR (`scripts/bench.sh metanode`).
    #[command(hide = true)]
    BenchState {
        #[arg(long, default_value_t = 1_000_000)]
        extents: u64,
        #[arg(long)]
        dir: std::path::PathBuf,
    },
}

#[derive(clap::Args)]
struct Target {
    /// Metanode addresses, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:7100")]
    meta: Vec<String>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Flags, then STRATA_* variables, then `serve --config FILE` (proto::config).
    let style = proto::config::Style {
        commands: &[
            "serve",
            "status",
            "add-member",
            "remove-member",
            "replace-member",
            "nodes",
            "remove-node",
            "repairs",
            "drain",
            "rebalance",
            "node-state",
            "streams",
            "create-stream",
        ],
        no_env: &[],
        file: true,
    };
    let cli: Cli = proto::config::parse(style);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    // `secrets` makes the file the others read.
    let keyring = match Keyring::from_env_or(cli.secrets.as_deref()) {
        _ if matches!(cli.cmd, Cmd::Secrets { .. }) => None,
        Ok(k) => k,
        Err(e) => {
            eprintln!("metanode: error: {e}");
            proto::exit_now(2);
        }
    };
    if let Err(e) = rt.block_on(run(cli.cmd, keyring)) {
        eprintln!("metanode: error: {e:#}");
        proto::exit_now(2);
    }
}

fn settings(a: Serve) -> anyhow::Result<Settings> {
    if a.id == 0 {
        bail!("--id must be > 0");
    }
    let mut s = Settings::new(a.id, a.advertise.unwrap_or_else(|| a.listen.to_string()), a.data);
    for m in &a.init {
        let (id, addr) = m.split_once('=').with_context(|| format!("--init entry {m:?} is not ID=HOST:PORT"))?;
        let id: u64 = id.parse().with_context(|| format!("--init entry {m:?}: bad id"))?;
        if id == 0 || s.init.insert(id, addr.to_string()).is_some() {
            bail!("--init entry {m:?}: ids must be > 0 and distinct");
        }
    }
    if !s.init.is_empty() && s.init.get(&a.id) != Some(&s.advertise) {
        bail!("--init must list this member as {}={}", a.id, s.advertise);
    }
    let MsRange((lo, hi)) = a.election_ms;
    if lo <= a.heartbeat_ms || hi <= lo {
        bail!("--election-ms needs heartbeat < MIN < MAX (heartbeat {} ms, got {lo}-{hi})", a.heartbeat_ms);
    }
    s.heartbeat_ms = a.heartbeat_ms;
    s.election_ms = (lo, hi);
    s.node_grace = Duration::from_millis(a.node_grace_ms);
    s.snapshot_logs = a.snapshot_logs.max(limits::SNAPSHOT_LOGS_MIN);
    s.placement_seed = a.placement_seed;
    s.repair_delay = Duration::from_millis(a.repair_delay_ms);
    s.repair_concurrency = a.repair_concurrency;
    s.repair_per_node = a.repair_per_node.max(1);
    if a.rebalance_threshold_pct > 100 {
        bail!("--rebalance-threshold-pct is a percentage (0 to 100)");
    }
    s.rebalance_threshold = a.rebalance_threshold_pct as f64 / 100.0;
    s.rebalance_min_bytes = a.rebalance_min_mib << 20;
    Ok(s)
}

async fn run(cmd: Cmd, keyring: Option<Keyring>) -> anyhow::Result<()> {
    let json = |v: &dyn erased::Json| println!("{}", v.json());
    // A CA bundle that cannot be used is reported before anything is dialled.
    proto::tls::client().map_err(anyhow::Error::msg)?;
    if !matches!(cmd, Cmd::Serve(_)) {
        // The admin commands act as an admin when they can.
        auth::set_default(keyring.as_ref().and_then(|k| k.credential_of(&[Role::Admin, Role::Client])));
    }
    match cmd {
        Cmd::Secrets { file } => {
            Keyring::generate().write_new(&file).with_context(|| format!("cannot create {}", file.display()))?;
            println!("wrote {}: client, node, admin and member secrets (mode 0600)", file.display());
        }
        Cmd::Serve(a) => {
            let listen = a.listen;
            let idle = Duration::from_millis(a.idle_timeout_ms.max(1));
            let certs = proto::tls::Certs::from_flags_or_env(a.tls_cert.as_deref(), a.tls_key.as_deref())?;
            if certs.is_some() && proto::tls::client().map_err(anyhow::Error::msg)?.is_none() {
                bail!(
                    "this metanode serves HTTPS but its own links (Raft, datanodes) would run in clear: set {} to \
                     the cluster's CA bundle",
                    proto::tls::CA_ENV
                );
            }
            let mut s = settings(a)?;
            match &keyring {
                None if !auth::loopback_only(&listen) => bail!("{}", auth::no_secrets_refusal("metanode", &listen)),
                None => tracing::warn!("no cluster secrets: anyone on this machine may call this metanode"),
                Some(k) if !k.has(Role::Member) || !k.has(Role::Node) => bail!(
                    "the cluster secrets need a member secret (metanodes sign Raft RPCs with it) and a node \
                     secret (they reach datanodes with it)"
                ),
                Some(_) => {}
            }
            // Repair and the opener's fences reach datanodes as a node.
            auth::set_default(keyring.as_ref().and_then(|k| k.credential(Role::Node)));
            s.keyring = keyring;
            let listener =
                tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
            let node = MetaNode::start(s.clone()).await?;
            // A closed stdout (the reader went away) must not stop the server.
            let mut out = std::io::stdout();
            let _ =
                writeln!(out, "metanode {} listening on {}", s.id, listener.local_addr()?).and_then(|()| out.flush());
            // /metrics beside the API, outside its signed-request check (a bearer token
            // from STRATA_METRICS_TOKEN instead, when set).
            let mut metrics = telemetry::Metrics::new();
            metrics.registry().register_collector(metanode::metrics::collector(node.clone()));
            let app = metanode::api::router(node.clone())
                .merge(telemetry::routes(Arc::new(metrics), telemetry::token_from_env()));
            let tls = match &certs {
                Some(c) => {
                    c.reload_on_sighup()?;
                    Some(c.acceptor_alpn(&[b"http/1.1"]))
                }
                None => None,
            };
            telemetry::http::serve(listener, app, idle, tls, client::shutdown_signal()).await;
            tracing::info!("shutting down");
            node.raft.shutdown().await.ok();
        }
        Cmd::Status(t) => {
            let c = MetaClient::new(t.meta.clone());
            json(&c.status_of(&t.meta[0]).await?);
        }
        Cmd::AddMember { t, id, addr } => MetaClient::new(t.meta).add_member(id, &addr).await?,
        Cmd::RemoveMember { t, id } => MetaClient::new(t.meta).remove_member(id).await?,
        Cmd::ReplaceMember { t, old, id, addr } => {
            let c = MetaClient::new(t.meta);
            c.add_member(id, &addr).await?;
            c.remove_member(old).await?;
        }
        Cmd::Nodes(t) => json(&MetaClient::new(t.meta).nodes().await?),
        Cmd::BenchState { extents, dir } => metanode::statebench::run(&dir, extents).await?,
        Cmd::Repairs { t, wait: false } => json(&MetaClient::new(t.meta).repairs().await?),
        Cmd::Repairs { t, wait: true } => {
            let r = progress::watch(&MetaClient::new(t.meta), progress::Work::Repair).await?;
            println!(
                "repaired: nothing waiting; {} copies made ({}) since this leader began, {} failed",
                r.done_total,
                client::status::bytes(r.bytes_total),
                r.failed_total
            );
        }
        Cmd::Drain { t, id, wait } => {
            let c = MetaClient::new(t.meta);
            c.set_node_state(id, NodeState::Draining).await?;
            if wait {
                progress::watch(&c, progress::Work::Drain(id)).await?;
                println!("datanode {id} is empty: it can go (`metanode remove-node {id}`)");
            } else {
                println!("datanode {id} is draining; `metanode drain {id} --wait` shows its progress");
            }
        }
        Cmd::Rebalance { t, action, wait } => {
            let c = MetaClient::new(t.meta);
            match action.as_str() {
                "start" => c.set_rebalance(false).await?,
                "stop" => c.set_rebalance(true).await?,
                "status" => {}
                other => bail!("unknown rebalance action {other:?}: use start, stop or status"),
            }
            if wait && action != "stop" {
                let r = progress::watch(&c, progress::Work::Rebalance).await?;
                let b = r.rebalance;
                let how = if b.paused { "rebalancing is paused" } else { "balanced" };
                println!(
                    "{how}: spread {:.1}%, {} moved in {} moves since this leader began",
                    b.spread_permille as f64 / 10.0,
                    client::status::bytes(b.moved_bytes_total),
                    b.moves_total
                );
            } else {
                json(&c.repairs().await?.rebalance);
            }
        }
        Cmd::RemoveNode { t, id } => MetaClient::new(t.meta).remove_node(id).await?,
        Cmd::NodeState { t, id, state } => {
            let state = match state.as_str() {
                "up" => NodeState::Up,
                "down" => NodeState::Down,
                "draining" => NodeState::Draining,
                other => bail!("unknown state {other:?}: use up, down or draining"),
            };
            json(&MetaClient::new(t.meta).set_node_state(id, state).await?);
        }
        Cmd::Streams { t, id: None } => json(&MetaClient::new(t.meta).streams().await?),
        Cmd::Streams { t, id: Some(id) } => json(&MetaClient::new(t.meta).stream(id).await?),
        Cmd::CreateStream { t, policy } => json(&MetaClient::new(t.meta).create_stream(policy).await?),
    }
    Ok(())
}

#[path = "metanode/progress.rs"]
mod progress;

mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string_pretty(self).expect("serializable")
        }
    }
}
