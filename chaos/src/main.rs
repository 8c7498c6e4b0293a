//! `chaos`: a seeded chaos run of a whole Strata cluster (see `scripts/chaos.sh`).
//!
//! Three metanodes, six datanodes, two gateways on one PostgreSQL, and GC, each process
//! in its own network namespace; metanode repair and datanode scrub run as they do in
//! production, with short delays. Workers drive S3 through both gateways while a
//! schedule that follows from the seed kills, pauses, partitions, slows and skews the
//! processes. At the end every fault heals, the cluster must come back to full
//! redundancy, every key is read once more, and the history is checked: nothing
//! acknowledged lost, no read of bytes never written for its key, at most one winner
//! per `If-None-Match: *` race, and the compare-and-swap counters linearizable. Then
//! everything is deleted and GC must give the space back.

mod check;
mod cluster;
mod faults;
mod net;
mod s3;
mod workload;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::check::{Call, Ret, Verdict};
use crate::cluster::{Cluster, Layout, Role};
use crate::faults::{Fault, Names, Planned};
use crate::workload::Ctx;

struct Args {
    seed: u64,
    minutes: f64,
    dir: Option<PathBuf>,
    bin: PathBuf,
    keep: bool,
    workers: u64,
    checkpoint_minutes: f64,
}

const USAGE: &str =
    "usage: chaos [--seed N] [--minutes M] [--workers W] [--checkpoint-minutes C] [--dir DIR] [--bin DIR] [--keep]
  Runs a whole cluster in network namespaces (needs root) under seeded faults and checks
  the history. --bin: where metanode, datanode, ogw and gc are (default: beside chaos).";

fn args() -> Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args {
        seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() % 100_000,
        minutes: 3.0,
        dir: None,
        bin: exe.parent().context("the binary's directory")?.to_path_buf(),
        keep: false,
        workers: 8,
        checkpoint_minutes: 10.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(f) = it.next() {
        let mut val = || it.next().with_context(|| format!("{f} needs a value\n{USAGE}"));
        match f.as_str() {
            "--seed" => a.seed = val()?.parse().context("--seed: a number")?,
            "--minutes" => a.minutes = val()?.parse().context("--minutes: a number")?,
            "--workers" => a.workers = val()?.parse().context("--workers: a number")?,
            "--checkpoint-minutes" => {
                a.checkpoint_minutes = val()?.parse().context("--checkpoint-minutes: a number")?
            }
            "--dir" => a.dir = Some(val()?.into()),
            "--bin" => a.bin = val()?.into(),
            "--keep" => a.keep = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if a.minutes.is_nan() || a.minutes <= 0.0 {
        bail!("--minutes must be positive");
    }
    Ok(a)
}

fn main() -> ExitCode {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    match rt.block_on(run(&a)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: seed {}: {e:#}", a.seed);
            ExitCode::from(2)
        }
    }
}

/// What undoes an active fault.
enum Undo {
    Restart(String),
    Cont(String),
    Heal(Vec<String>),
    Unskew(String),
}

#[derive(Default)]
struct Tally {
    faults: u64,
    skipped: u64,
    kills: u64,
    by_kind: BTreeMap<&'static str, u64>,
    /// Processes that died on their own: (name, how).
    exits: Vec<(String, String)>,
}

struct Runner {
    cl: Cluster,
    tally: Tally,
    active: Vec<(Instant, Undo)>,
    /// Namespaces with a network fault on them now.
    net_busy: HashSet<String>,
}

fn kind(f: &Fault) -> &'static str {
    match f {
        Fault::Kill(_) => "kill -9",
        Fault::Pause(_) => "SIGSTOP",
        Fault::IsolateLeader => "isolate leader",
        Fault::SplitDatanodes(_) => "split datanodes",
        Fault::CutSql(_) => "gateway cut from SQL",
        Fault::Loss(..) => "packet loss",
        Fault::Slow(_) => "slow link",
        Fault::Skew(..) => "clock skew",
    }
}

impl Runner {
    fn meta(&self) -> client::MetaClient {
        client::MetaClient::new(self.cl.meta_addrs())
    }

    /// The member most members name as leader now, if any.
    async fn leader(&self) -> Option<String> {
        let c = self.meta();
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for a in self.cl.meta_addrs() {
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), c.status_of(&a)).await {
                if let Some(l) = s.leader {
                    *votes.entry(l.id).or_default() += 1;
                }
            }
        }
        votes.into_iter().max_by_key(|(_, v)| *v).map(|(id, _)| format!("m{id}"))
    }

    /// Whether taking `name` away keeps enough of its kind: a metanode majority, four
    /// datanodes, one gateway.
    fn may_take(&self, name: &str) -> bool {
        let p = self.cl.procs.iter().find(|p| p.name == name).unwrap();
        if p.down || p.stopped {
            return false;
        }
        let away = self.cl.of(p.role).filter(|q| q.down || q.stopped).count() + 1;
        match p.role {
            Role::Meta => away <= 1,
            Role::Data => away <= 2,
            Role::Gateway => away <= 1,
            Role::Sql | Role::Gc => true,
        }
    }

    fn ns_of(&self, name: &str) -> String {
        self.cl.procs.iter().find(|p| p.name == name).unwrap().ns.clone()
    }

    fn ips_except(&self, names: &[String]) -> Vec<String> {
        self.cl.procs.iter().filter(|p| !names.contains(&p.name)).map(|p| p.ip.clone()).collect()
    }

    async fn apply(&mut self, p: &Planned) -> Result<()> {
        let until = Instant::now() + Duration::from_millis(p.for_ms);
        let undo = match &p.fault {
            Fault::Kill(n) | Fault::Pause(n) | Fault::Skew(n, _) if !self.may_take(n) => None,
            Fault::Kill(n) => {
                let pr = self.cl.by_name(n);
                pr.kill9();
                pr.down = true;
                self.tally.kills += 1;
                Some(Undo::Restart(n.clone()))
            }
            Fault::Pause(n) => {
                self.cl.by_name(n).stop();
                Some(Undo::Cont(n.clone()))
            }
            Fault::Skew(n, secs) => {
                let pr = self.cl.by_name(n);
                pr.kill9();
                pr.env.push(("LD_PRELOAD".into(), "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1".into()));
                pr.env.push(("FAKETIME".into(), format!("{secs:+}")));
                pr.env.push(("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()));
                pr.start()?;
                self.tally.kills += 1;
                Some(Undo::Unskew(n.clone()))
            }
            net_fault => {
                let names: Vec<String> = match net_fault {
                    Fault::IsolateLeader => self.leader().await.into_iter().collect(),
                    Fault::SplitDatanodes(side) => side.clone(),
                    Fault::CutSql(n) | Fault::Loss(n, _) | Fault::Slow(n) => vec![n.clone()],
                    _ => unreachable!(),
                };
                let nss: Vec<String> = names.iter().map(|n| self.ns_of(n)).collect();
                if names.is_empty() || nss.iter().any(|ns| self.net_busy.contains(ns)) {
                    None
                } else {
                    for ns in &nss {
                        match net_fault {
                            Fault::IsolateLeader | Fault::SplitDatanodes(_) => {
                                let host = self.cl.net.host_ip();
                                let peers: Vec<String> =
                                    self.ips_except(&names).into_iter().filter(|ip| *ip != host).collect();
                                self.cl.net.cut(ns, &peers)?;
                            }
                            Fault::CutSql(_) => {
                                let sql = self.cl.of(Role::Sql).next().unwrap().ip.clone();
                                self.cl.net.cut(ns, &[sql])?;
                            }
                            Fault::Loss(_, pct) => self.cl.net.loss(ns, *pct)?,
                            Fault::Slow(_) => self.cl.net.slow(ns, 8_000, 400)?,
                            _ => unreachable!(),
                        }
                        self.net_busy.insert(ns.clone());
                    }
                    Some(Undo::Heal(nss))
                }
            }
        };
        match undo {
            Some(u) => {
                self.tally.faults += 1;
                *self.tally.by_kind.entry(kind(&p.fault)).or_default() += 1;
                self.active.push((until, u));
            }
            None => self.tally.skipped += 1,
        }
        Ok(())
    }

    fn undo(&mut self, u: Undo) -> Result<()> {
        match u {
            Undo::Restart(n) => {
                let p = self.cl.by_name(&n);
                p.down = false;
                p.start()?;
            }
            Undo::Cont(n) => {
                let p = self.cl.by_name(&n);
                if p.stopped {
                    p.cont()
                }
            }
            Undo::Heal(nss) => {
                for ns in nss {
                    self.cl.net.heal(&ns)?;
                    self.net_busy.remove(&ns);
                }
            }
            Undo::Unskew(n) => {
                let p = self.cl.by_name(&n);
                p.env.retain(|(k, _)| !k.starts_with("FAKETIME") && k != "LD_PRELOAD");
                // Killed meanwhile: it comes back with the right clock when that ends.
                if !p.down {
                    p.start()?;
                }
            }
        }
        Ok(())
    }

    /// Ends the faults whose time is up (all of them with `all`).
    fn heal_due(&mut self, all: bool) -> Result<()> {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = self.active.drain(..).partition(|(t, _)| all || *t <= now);
        self.active = keep;
        for (_, u) in due {
            self.undo(u)?;
        }
        Ok(())
    }

    /// Restarts what died on its own (not held down by a fault), and counts it.
    fn supervise(&mut self) -> Result<()> {
        for p in self.cl.procs.iter_mut() {
            if let Some(st) = p.reap() {
                let how = match std::os::unix::process::ExitStatusExt::signal(&st) {
                    Some(sig) => format!("killed by signal {sig}"),
                    None => format!("exit {}", st.code().unwrap_or(-1)),
                };
                eprintln!("chaos: {} died on its own ({how}); see {}", p.name, p.log_path().display());
                self.tally.exits.push((p.name.clone(), how));
            }
            let due = p.last_start.is_none_or(|t| t.elapsed() > Duration::from_secs(1));
            if !p.running() && !p.down && p.starts > 0 && due {
                p.start()?;
            }
        }
        Ok(())
    }

    /// Waits until every datanode is up and no extent lacks a copy; what is still wrong
    /// when `within` runs out.
    async fn wait_redundant(&mut self, within: Duration) -> Result<(), String> {
        let t = Instant::now();
        let n = self.cl.of(Role::Data).count();
        loop {
            let _ = self.supervise();
            let c = self.meta();
            let why = match (c.nodes().await, c.repairs().await) {
                (Ok(nodes), Ok(r)) => {
                    let up = nodes.iter().filter(|d| d.state == proto::meta::NodeState::Up).count();
                    if up == n && r.degraded.is_empty() && r.unreadable == 0 && r.waiting == 0 {
                        return Ok(());
                    }
                    format!(
                        "{up} of {n} datanodes up, degraded {:?}, {} unreadable, {} copies waiting",
                        r.degraded.iter().map(|d| (d.policy.to_string(), d.missing, d.extents)).collect::<Vec<_>>(),
                        r.unreadable,
                        r.waiting
                    )
                }
                (a, b) => format!("metanodes not answering: {:?} {:?}", a.err(), b.err()),
            };
            if t.elapsed() > within {
                return Err(why);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What the metanode still holds, for when GC did not give the space back: streams,
    /// extents (open, sealed) and the sealed bytes of their copies; then `gc audit`.
    async fn leftovers(&self) -> String {
        let c = self.meta();
        let Ok(streams) = c.streams().await else { return "metanodes not answering".into() };
        let (mut open, mut sealed, mut bytes) = (0, 0, 0u64);
        let mut by_stream = Vec::new();
        for s in &streams {
            let mut b = 0;
            for e in &s.extents {
                match c.extent(*e).await {
                    Ok(x) => match x.sealed_len {
                        Some(l) => {
                            sealed += 1;
                            b += l * x.replicas.len() as u64;
                        }
                        None => open += 1,
                    },
                    Err(e) => return format!("extent {e:?}: {e}"),
                }
            }
            bytes += b;
            by_stream.push((b >> 20, s.id.0, s.extents.len(), s.writer.clone().unwrap_or_default()));
        }
        by_stream.sort();
        by_stream.reverse();
        by_stream.truncate(8);
        let audit = std::process::Command::new(self.cl.bin.join("gc"))
            .args(["audit", "--db", &self.cl.db_url])
            .output()
            .map(|o| {
                let err = String::from_utf8_lossy(&o.stderr);
                let err: Vec<&str> = err.lines().filter(|l| !l.contains('%')).collect();
                format!("{} {}", String::from_utf8_lossy(&o.stdout).trim(), err.join("; "))
            })
            .unwrap_or_else(|e| e.to_string());
        format!(
            "{} streams, {open} open and {sealed} sealed extents holding {} MiB of copies; the largest streams \
             (MiB, id, extents, writer): {by_stream:?}; gc audit: {}",
            streams.len(),
            bytes >> 20,
            audit.trim()
        )
    }

    /// Bytes in use on all datanodes (from their heartbeats).
    async fn used(&self) -> Option<u64> {
        let nodes = self.meta().nodes().await.ok()?;
        Some(nodes.iter().flat_map(|n| &n.devices).map(|d| d.capacity_bytes - d.free_bytes).sum())
    }
}

async fn run(a: &Args) -> Result<bool> {
    let dir = a.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("strata-chaos-{}", a.seed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for b in ["metanode", "datanode", "ogw", "gc"] {
        if !a.bin.join(b).exists() {
            bail!(
                "{} is missing (build with: cargo build -p metanode -p datanode -p ogw -p gc)",
                a.bin.join(b).display()
            );
        }
    }
    let run_ms = (a.minutes * 60_000.0) as u64;
    let names = Names { metas: 3, datanodes: 6, gateways: 2 };
    let plan = faults::schedule(a.seed, run_ms, &names);
    eprintln!(
        "chaos: seed {}, {} minutes, {} faults planned, cluster under {}",
        a.seed,
        a.minutes,
        plan.len(),
        dir.display()
    );
    let tag = format!("c{}", std::process::id() % 10_000);
    let net = net::Net::new(&tag, 100 + (std::process::id() % 100) as u8)?;
    let layout = Layout {
        bin: a.bin.clone(),
        dir: dir.clone(),
        metas: names.metas,
        datanodes: names.datanodes,
        gateways: names.gateways,
        device: "768M".into(),
        small_device: 48 << 20,
    };
    let cl = Cluster::start(&layout, net)?;
    // The run's own metanode requests (status, nodes, repairs) are an admin's.
    let keyring = proto::auth::Keyring::load(&cl.secrets).map_err(|e| anyhow::anyhow!("{e}"))?;
    proto::auth::set_default(keyring.credential_of(&[proto::auth::Role::Admin]));
    let mut r = Runner { cl, tally: Tally::default(), active: Vec::new(), net_busy: HashSet::new() };
    r.wait_redundant(Duration::from_secs(120))
        .await
        .map_err(|e| anyhow::anyhow!("the cluster did not come up: {e}"))?;
    r.cl.ogw_admin("tenant-create", &["chaos"])?;
    let keys = r.cl.ogw_admin("key-create", &["chaos"])?;
    let mut kv = keys.split_whitespace();
    let (access, secret) =
        (kv.next().context("an access key")?.to_string(), kv.next().context("a secret")?.to_string());
    r.cl.start_rest()?;
    let s3 = s3::S3::new(r.cl.gateway_endpoints(), access, secret, Duration::from_secs(20));
    let ctx = Arc::new(Ctx::new(s3, a.seed));
    ctx.setup().await?;
    let used0 = r.used().await.unwrap_or(0);

    // The run: workers, and the schedule applied as its times come.
    let workers: Vec<_> = (0..a.workers).map(|i| tokio::spawn(ctx.clone().worker(i))).collect();
    let start = Instant::now();
    let mut plan = plan.into_iter().peekable();
    let mut last_report = Instant::now();
    let mut interrupted = false;
    // SIGTERM, like Ctrl-C, ends the run with its cleanup (processes, namespaces, loop
    // device); a run killed without it left them behind.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // The least free space the small device reported.
    let mut small_free = u64::MAX;
    // Time spent in checkpoints, when the schedule stands still.
    let mut paused = Duration::ZERO;
    let mut next_checkpoint = Duration::from_secs_f64(a.checkpoint_minutes * 60.0);
    let mut checkpoint_failures = Vec::new();
    while start.elapsed() - paused < Duration::from_millis(run_ms) {
        let now = start.elapsed() - paused;
        while let Some(p) = plan.next_if(|p| now >= Duration::from_millis(p.at_ms)) {
            r.apply(&p).await?;
        }
        if now >= next_checkpoint && now + Duration::from_secs(60) < Duration::from_millis(run_ms) {
            // Every fault healed: full redundancy must come back, and every key is read
            // (the reads join the history) while the workers go on.
            next_checkpoint += Duration::from_secs_f64(a.checkpoint_minutes * 60.0);
            let t = Instant::now();
            r.heal_due(true)?;
            let red = r.wait_redundant(Duration::from_secs(300)).await;
            let unread = ctx.sweep(Duration::from_secs(60)).await;
            eprintln!(
                "chaos: checkpoint at {:.0} s: {}, {} keys unanswered, {:.0} s",
                now.as_secs_f64(),
                red.as_ref().map_or_else(|e| format!("NOT fully redundant: {e}"), |_| "fully redundant".into()),
                unread.len(),
                t.elapsed().as_secs_f64()
            );
            if let Err(e) = red {
                checkpoint_failures.push(e);
            }
            if !unread.is_empty() {
                checkpoint_failures.push(format!("keys unanswered: {unread:?}"));
            }
            paused += t.elapsed();
        }
        r.heal_due(false)?;
        r.supervise()?;
        if last_report.elapsed() > Duration::from_secs(15) {
            last_report = Instant::now();
            if let Ok(Ok(nodes)) = tokio::time::timeout(Duration::from_secs(2), r.meta().nodes()).await {
                let small = nodes.iter().find(|n| n.id.0 == names.datanodes as u64);
                if let Some(free) = small.and_then(|n| n.devices.first()).map(|d| d.free_bytes) {
                    small_free = small_free.min(free);
                }
            }
            let ops = ctx.hist.ops.lock().unwrap().len();
            eprintln!(
                "chaos: {:>4}s {ops} operations, {} faults ({} kill -9), {} active",
                start.elapsed().as_secs(),
                r.tally.faults,
                r.tally.kills,
                r.active.len()
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tokio::signal::ctrl_c() => { interrupted = true; break; }
            _ = term.recv() => { interrupted = true; break; }
        }
    }
    ctx.stop.store(true, Ordering::Relaxed);
    r.heal_due(true)?;
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(60), w).await;
    }
    if interrupted {
        bail!("interrupted");
    }

    // Healed: full redundancy, then the final reads and the check.
    eprintln!("chaos: faults healed; waiting for full redundancy");
    let t = Instant::now();
    let redundancy = r.wait_redundant(Duration::from_secs(300)).await;
    let heal_secs = t.elapsed().as_secs_f64();
    let unread = ctx.sweep(Duration::from_secs(120)).await;
    let keys = ctx.keys();
    let ops = std::mem::take(&mut *ctx.hist.ops.lock().unwrap());
    let corrupt = ctx.hist.corrupt.lock().unwrap().clone();
    let mut by_key: BTreeMap<String, Vec<check::Op>> = BTreeMap::new();
    for (k, o) in &ops {
        by_key.entry(k.clone()).or_default().push(*o);
    }
    let acked = ops.iter().filter(|(_, o)| o.ret != Ret::Unknown).count();
    let unknown = ops.len() - acked;
    let (mut lost, mut nonlin, mut undecided) = (0, 0, 0);
    for (k, h) in &by_key {
        match check::check(&check::prune(h), 50_000_000) {
            Verdict::Linearizable => {}
            Verdict::Undecided => undecided += 1,
            Verdict::Violation(v) => {
                let cas = k.starts_with("c/") || k.starts_with("race/");
                if cas {
                    nonlin += 1
                } else {
                    lost += 1
                }
                eprintln!(
                    "chaos: {} on {k}: stuck at {:?}, the register could hold {:?} ({} operations on the key)",
                    if cas { "linearizability violation" } else { "lost or stale" },
                    v.stuck_at,
                    v.states,
                    h.len()
                );
            }
        }
    }
    // Listings against the plain keys' histories.
    let lists = std::mem::take(&mut *ctx.hist.lists.lock().unwrap());
    let plain: Vec<(&str, &[check::Op])> =
        by_key.iter().filter(|(k, _)| k.starts_with("k/")).map(|(k, h)| (k.as_str(), h.as_slice())).collect();
    let mut list_wrong = 0;
    for (s, e, listed) in &lists {
        let listed: HashSet<&str> = listed.iter().map(String::as_str).collect();
        for w in check::check_list(*s, *e, &listed, &plain) {
            eprintln!("chaos: listing at {:.3} s: {w}", *s as f64 / 1e9);
            list_wrong += 1;
        }
    }
    nonlin += list_wrong;
    let races = by_key.keys().filter(|k| k.starts_with("race/")).count();
    let race_wins = ops
        .iter()
        .filter(|(k, o)| k.starts_with("race/") && matches!(o.call, Call::Create(_)) && o.ret == Ret::Ok)
        .count();
    for c in &corrupt {
        eprintln!("chaos: corrupt: {c}");
    }

    // GC: everything deleted, the space must come back.
    let used1 = r.used().await.unwrap_or(0);
    let undeleted = ctx.delete_all(keys.clone(), Duration::from_secs(120)).await;
    let t = Instant::now();
    let target = used0 + used1.saturating_sub(used0) / 4;
    let mut used2 = used1;
    while t.elapsed() < Duration::from_secs(240) {
        used2 = r.used().await.unwrap_or(used2);
        if used2 <= target {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let deleted = ctx.hist.deleted.load(Ordering::Relaxed);
    let gc_ok = used2 <= target && undeleted.is_empty() && deleted == keys.len() as u64;
    if !gc_ok {
        eprintln!("chaos: after the deletes the metanode holds {}", r.leftovers().await);
    }
    let crashes: Vec<&(String, String)> =
        r.tally.exits.iter().filter(|(_, how)| how.starts_with("killed") || how == "exit 101").collect();

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "chaos: faults by kind: {:?} ({} skipped: target already down or busy)",
        r.tally.by_kind, r.tally.skipped
    );
    eprintln!(
        "chaos: {} operations ({unknown} of unknown outcome; {} ranged reads, {} keys deleted by DeleteObjects), {} keys, \
         {races} If-None-Match races with {race_wins} winners, {} listings ({list_wrong} wrong)",
        ops.len(),
        ctx.hist.ranged.load(Ordering::Relaxed),
        ctx.hist.multi_deleted.load(Ordering::Relaxed),
        by_key.len(),
        lists.len()
    );
    let mut exits: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (n, how) in &r.tally.exits {
        *exits.entry((n, how)).or_default() += 1;
    }
    eprintln!(
        "chaos: processes that died on their own: {exits:?} ({} crashes: a panic or a signal the run did not send)",
        crashes.len()
    );
    match &redundancy {
        Ok(()) => eprintln!("chaos: full redundancy {heal_secs:.0} s after the faults healed"),
        Err(why) => eprintln!("chaos: NOT back to full redundancy after {heal_secs:.0} s: {why}"),
    }
    if !unread.is_empty() {
        eprintln!("chaos: {} keys gave no answer to the final reads: {:?}", unread.len(), unread);
    }
    eprintln!(
        "chaos: GC: {:.0} MiB in use before deleting all {deleted} keys, {:.0} MiB {:.0} s after (start {:.0} MiB){}",
        mib(used1),
        mib(used2),
        t.elapsed().as_secs_f64(),
        mib(used0),
        if gc_ok { "" } else { ": NOT freed" }
    );
    eprintln!(
        "chaos: the small device (d{}, {} MiB) got down to {:.1} MiB free",
        names.datanodes,
        layout.small_device >> 20,
        mib(small_free.min(layout.small_device))
    );
    for f in &checkpoint_failures {
        eprintln!("chaos: a checkpoint failed: {f}");
    }
    if undecided > 0 {
        eprintln!("chaos: {undecided} keys undecided (search budget)");
    }
    println!(
        "chaos: seed {}, {} faults, {acked} acknowledged operations, {lost} lost, {} corrupt, {nonlin} linearizability violations",
        a.seed,
        r.tally.faults,
        corrupt.len()
    );
    let ok = lost == 0
        && corrupt.is_empty()
        && nonlin == 0
        && redundancy.is_ok()
        && unread.is_empty()
        && gc_ok
        && crashes.is_empty()
        && undecided == 0
        && checkpoint_failures.is_empty();
    drop(r);
    if ok && !a.keep {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("chaos: logs kept in {}", dir.display());
    }
    Ok(ok)
}
