//! `scripts/bench.sh repair` (issue 15): re-protection after a datanode is lost, on a
//! local cluster of real processes (a metanode, 5 datanodes with a 4 GiB device file
//! each, all on this machine's one disk), with the disk's sequential write bandwidth
//! measured in the same run.
//!
//! 1 GiB of `replica:3` appends (1 MiB each, 64 MiB extents) are written and sealed.
//! Then, twice, the datanode holding the most copies is killed and its device removed,
//! and the copies it held are rebuilt on the others:
//! - with the default pacing (32 MiB/s of rebuilds per datanode, 4 repairs at once):
//!   client appends (1 MiB, 4 in flight, as fast as they go, at most `APPEND_CAP`
//!   bytes) and reads (1 MiB slices, 400 MB/s offered) run from the first repair until
//!   the last, against the same on the quiet cluster before the loss
//!   and after its repair (`*_during_repair`, target ≥ 0.7; the quiet baseline is the
//!   mean of the runs before and after); and the time to re-protect. Each rate is over
//!   its own load's running time: the writer's ends with its last acknowledgement;
//! - with pacing off (datanodes restarted with `--rebuild-rate 0`): the time to
//!   re-protect against its floor, the lost bytes copied once on this one disk at the
//!   rate the device copies in the same run (`device_copy`: every lost byte must be read
//!   and written again, and here source and target share the disk), target ≥ 0.5
//!   (`reprotect_unthrottled`; it also shows the ratio to writing the bytes alone).
//!
//! Env: STRATA_BENCH_SECS (per quiet case, default 5).

#[path = "support/baseline.rs"]
mod baseline;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baseline::{device_copy, device_seq_write, emit};
use bytes::Bytes;
use client::{MetaClient, Slice, StreamClient, StreamConfig};
use proto::meta::Policy;
use proto::NodeId;
use serde_json::json;
use testkit::{Cluster, DataNode};

const NODES: u64 = 5;
const DATA_BYTES: u64 = 1 << 30;

fn payload(seed: u32) -> Bytes {
    Bytes::from((0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8).collect::<Vec<u8>>())
}

/// Reads offered by the client load, MB/s in all (4 readers). Unbounded, 4 readers of
/// cached slices run at 1.3-1.5 GB/s and take both of this machine's cores by
/// themselves, so that any other work, repair included, shows only as CPU taken from
/// them: a fixed offered load measures what repair takes from client I/O instead.
const READ_OFFERED_MBPS: f64 = 400.0;

/// The most a writer appends in one load (1 MiB appends), so that the device files hold
/// every phase's appends, three copies each, and the repairs.
const APPEND_CAP: u64 = 512;

/// Client load until `stop`: one writer with 4 appends of 1 MiB in flight, at most
/// `APPEND_CAP` of them, and 4 readers of random acknowledged slices at
/// `READ_OFFERED_MBPS` in all. Returns (append MB/s, read MB/s), each over the time its
/// load ran: the writer's from its first append to its last acknowledgement (not to
/// `stop`, which may come long after it reached its cap).
async fn load(sc: &StreamClient, slices: Arc<Vec<Slice>>, stop: Arc<AtomicBool>) -> (f64, f64) {
    let t = Instant::now();
    let read = Arc::new(AtomicU64::new(0));
    let writer = {
        let (sc, stop) = (sc.clone(), stop.clone());
        tokio::spawn(async move {
            let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
            let w = sc.open_writer(s.id, "bench-load").await.unwrap();
            let p = payload(7);
            let mut window = std::collections::VecDeque::new();
            let (mut n, mut wrote) = (0, 0u64);
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && n < APPEND_CAP {
                while window.len() < 4 {
                    window.push_back(w.submit(p.clone()));
                    n += 1;
                }
                window.pop_front().unwrap().await.unwrap();
                wrote += 1 << 20;
            }
            for f in window {
                f.await.unwrap();
                wrote += 1 << 20;
            }
            let rate = wrote as f64 / 1e6 / t.elapsed().as_secs_f64();
            w.close().await.unwrap();
            rate
        })
    };
    let readers: Vec<_> = (0..4u64)
        .map(|r| {
            let (sc, stop, read, slices) = (sc.clone(), stop.clone(), read.clone(), slices.clone());
            tokio::spawn(async move {
                let mut i = r * 7919;
                let every = Duration::from_secs_f64((1 << 20) as f64 / (READ_OFFERED_MBPS / 4.0 * 1e6));
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(next.into()).await;
                    next += every;
                    i = i.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let s = slices[(i >> 33) as usize % slices.len()];
                    let b = sc.read(s).await.unwrap();
                    read.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let wrote = writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    (wrote, read.load(Ordering::Relaxed) as f64 / 1e6 / t.elapsed().as_secs_f64())
}

/// The datanode holding the most copies, and the bytes of the copies it holds.
async fn busiest(meta: &MetaClient) -> (NodeId, u64) {
    let mut held: HashMap<NodeId, u64> = HashMap::new();
    for s in meta.streams().await.unwrap() {
        for e in meta.stream(s.id).await.unwrap().extents {
            for r in &e.replicas {
                *held.entry(r.node).or_default() += e.sealed_len.unwrap_or(0);
            }
        }
    }
    held.into_iter().max_by_key(|(n, b)| (*b, n.0)).unwrap()
}

/// Kills `victim` for good; returns when its loss is repairable (down past the delay:
/// the first repair is in flight).
async fn lose(cl: &Cluster, dns: &mut [DataNode], meta: &MetaClient, victim: NodeId) -> Instant {
    dns[victim.0 as usize - 1].kill9();
    let _ = std::fs::remove_file(cl.dir.path().join(format!("d{victim}.img")));
    // Repair starts once the node is marked down (the loss shows as degraded extents)
    // and the delay has passed (the first repair is in flight).
    loop {
        let r = meta.repairs().await.unwrap();
        let down = r.down_ms.iter().any(|(n, _)| *n == victim);
        if down && !r.degraded.is_empty() && !r.in_flight.is_empty() {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The time from `start` (see `lose`) to every extent being whole again.
async fn repaired(meta: &MetaClient, start: Instant) -> f64 {
    let mut shown = Instant::now();
    loop {
        let r = meta.repairs().await.unwrap();
        if r.degraded.is_empty() && r.waiting == 0 && r.in_flight.is_empty() {
            return start.elapsed().as_secs_f64();
        }
        if shown.elapsed() > Duration::from_secs(2) {
            shown = Instant::now();
            eprintln!(
                "repair: {:.0?}: {} waiting, {} in flight, {} done, {} failed, last error {:?}",
                start.elapsed(),
                r.waiting,
                r.in_flight.len(),
                r.done_total,
                r.failed_total,
                r.last_error
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until each of datanodes `live` has scrubbed at least as many copies as it
/// rebuilt (their logs say both).
async fn scrubbed_rebuilds(cl: &Cluster, live: impl Iterator<Item = u64>) {
    for i in live {
        let log = cl.dir.path().join(format!("d{i}.log"));
        testkit::wait_for("scrub to read the rebuilt copies", Duration::from_secs(300), || async {
            let text = std::fs::read_to_string(&log).ok()?;
            let scrubbed: usize = text
                .lines()
                .filter(|l| l.contains("scrub pass:"))
                .filter_map(|l| l.split("bytes of ").nth(1)?.split(' ').next()?.parse::<usize>().ok())
                .sum();
            (scrubbed >= text.matches("rebuilt extent").count()).then_some(())
        })
        .await;
    }
}

fn main() {
    let secs: f64 = std::env::var("STRATA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let cl = Cluster::start(1, &["--node-grace-ms", "1000", "--repair-delay-ms", "1000"]);
        let seq = device_seq_write(cl.dir.path(), secs);
        emit(json!({"suite": "repair", "case": "device_seq_write", "value": seq, "unit": "MB/s"}));
        let copy_first = device_copy(cl.dir.path());
        let start = |id: u64, extra: &[&str]| DataNode::start_with(cl.dir.path(), NodeId(id), &cl.addrs(), "4G", false, 100, extra);
        let mut dns: Vec<DataNode> = (1..=NODES).map(|i| start(i, &[])).collect();
        let meta = cl.client();
        testkit::wait_datanodes_up(&meta, NODES as usize).await;
        let sc = StreamClient::new(meta.clone(), StreamConfig { extent_bytes_max: 64 << 20, ..Default::default() });

        // The data: 4 streams of 1 MiB appends, sealed.
        let mut slices = Vec::new();
        for w in 0..4u32 {
            let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
            let wr = sc.open_writer(s.id, "bench").await.unwrap();
            let p = payload(w);
            let futs: Vec<_> = (0..DATA_BYTES / 4 / (1 << 20)).map(|_| wr.submit(p.clone())).collect();
            for f in futs {
                slices.push(f.await.unwrap());
            }
            wr.close().await.unwrap();
        }
        let slices = Arc::new(slices);
        eprintln!("repair bench: {} MiB written", DATA_BYTES >> 20);

        // Quiet: the client load alone, for `secs` (before the loss, and again after
        // its repair: the baseline is the mean of the two, so that the disk's drift
        // over the run weighs on both sides of the ratio alike).
        let quiet = |tag: &'static str| {
            let (sc, slices) = (sc.clone(), slices.clone());
            async move {
                let stop = Arc::new(AtomicBool::new(false));
                let timer = {
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                        stop.store(true, Ordering::Relaxed);
                    })
                };
                let (put, get) = load(&sc, slices, stop).await;
                timer.await.unwrap();
                eprintln!("quiet ({tag}): appends {put:.0} MB/s, reads {get:.0} MB/s");
                (put, get)
            }
        };
        let (put_before, get_before) = quiet("before the loss").await;

        // Loss 1, default pacing, with the client load running from the first repair
        // until the last.
        let (victim, bytes) = busiest(&meta).await;
        eprintln!("repair bench: losing datanode {victim} ({} MiB of copies), paced, with client load", bytes >> 20);
        let repairing = lose(&cl, &mut dns, &meta, victim).await;
        let stop = Arc::new(AtomicBool::new(false));
        let client_load = {
            let (sc, slices, stop) = (sc.clone(), slices.clone(), stop.clone());
            tokio::spawn(async move { load(&sc, slices, stop).await })
        };
        let took = repaired(&meta, repairing).await;
        stop.store(true, Ordering::Relaxed);
        let (put_busy, get_busy) = client_load.await.unwrap();
        eprintln!("during repair: appends {put_busy:.0} MB/s, reads {get_busy:.0} MB/s");
        // Scrub reads each rebuilt copy back soon after its rebuild (part of repair's
        // cost while it overlaps the load above); the run after waits until it has.
        let t = Instant::now();
        scrubbed_rebuilds(&cl, (1..=NODES).filter(|&i| NodeId(i) != victim)).await;
        eprintln!("scrub read back the rebuilt copies {:.1?} after the repair", t.elapsed());
        let (put_after, get_after) = quiet("after the repair").await;
        let (put_quiet, get_quiet) = ((put_before + put_after) / 2.0, (get_before + get_after) / 2.0);
        let floor = bytes as f64 / 1e6 / seq;
        emit(json!({"suite": "repair", "case": "reprotect_paced", "value": took, "unit": "s", "lower_is_better": true,
            "bytes": bytes, "baseline": "bytes / device_seq_write", "baseline_value": floor, "ratio": floor / took,
            "rebuild_rate_per_node": "32 MiB/s"}));
        emit(json!({"suite": "repair", "case": "append_1m_d4_during_repair", "value": put_busy, "unit": "MB/s",
            "baseline": "append_1m_d4_quiet", "baseline_value": put_quiet, "ratio": put_busy / put_quiet, "target": 0.7,
            "quiet_before": put_before, "quiet_after": put_after}));
        emit(json!({"suite": "repair", "case": "read_1m_c4_during_repair", "value": get_busy, "unit": "MB/s",
            "baseline": "read_1m_c4_quiet", "baseline_value": get_quiet, "ratio": get_busy / get_quiet, "target": 0.7,
            "quiet_before": get_before, "quiet_after": get_after}));

        // Loss 2, pacing off: how fast repair can go on this machine.
        for d in dns.iter_mut() {
            d.kill9();
        }
        dns = (1..=NODES).map(|i| if NodeId(i) == victim { DataNode::dead() } else { start(i, &["--rebuild-rate", "0"]) }).collect();
        testkit::wait_for("the datanodes up again", Duration::from_secs(60), || async {
            let up = meta.nodes().await.ok()?.iter().filter(|n| n.state == proto::meta::NodeState::Up).count();
            (up == NODES as usize - 1).then_some(())
        })
        .await;
        // The device's copy rate: the better of the run's start and now, just before
        // (the disk's rate drifts over a run; the better one is the harder floor).
        let copy_now = device_copy(cl.dir.path());
        let copy = copy_first.max(copy_now);
        emit(json!({"suite": "repair", "case": "device_copy", "value": copy, "unit": "MB/s",
            "at_start": copy_first, "before_loss": copy_now}));
        let (victim, bytes) = busiest(&meta).await;
        eprintln!("repair bench: losing datanode {victim} ({} MiB of copies), unpaced", bytes >> 20);
        let repairing = lose(&cl, &mut dns, &meta, victim).await;
        let took = repaired(&meta, repairing).await;
        // The floor: the lost bytes copied once on this one disk (read and written
        // again), as fast as the device copies; and, for comparison with earlier
        // figures, written once at its sequential write bandwidth (reading them free).
        let (floor, write_floor) = (bytes as f64 / 1e6 / copy, bytes as f64 / 1e6 / seq);
        emit(json!({"suite": "repair", "case": "reprotect_unthrottled", "value": took, "unit": "s",
            "lower_is_better": true, "bytes": bytes, "baseline": "bytes / device_copy", "baseline_value": floor,
            "ratio": floor / took, "target": 0.5, "write_floor": write_floor, "ratio_to_write_floor": write_floor / took}));
        drop(dns);
        // Where the rebuilds' time went (the datanodes log each one).
        for i in 1..=NODES {
            let log = std::fs::read_to_string(cl.dir.path().join(format!("d{i}.log"))).unwrap_or_default();
            for l in log.lines().filter(|l| l.contains("rebuilt extent")).take(3) {
                eprintln!("d{i}: {}", l.split("rebuilt").nth(1).unwrap_or(l));
            }
        }
    });
}
