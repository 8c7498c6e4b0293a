//! `scripts/bench.sh repair` (issue 15): re-protection after a datanode is lost, on a
//! local cluster of real processes (a metanode, 5 datanodes with a 4 GiB device file
//! each, all on this machine's one disk), with the disk's sequential write bandwidth
//! measured in the same run.
//!
//! 1 GiB of `replica:3` appends (1 MiB each, 64 MiB extents) are written and sealed.
//! Then, twice, the datanode holding the most copies is killed and its device removed,
//! and the copies it held are rebuilt on the others:
//! - with the default pacing (32 MiB/s of rebuilds per datanode, 4 repairs at once):
//!   client appends (1 MiB, 4 in flight) and reads (1 MiB slices, 400 MB/s offered) run
//!   while repair does, against the same on the quiet cluster before the loss
//!   (`*_during_repair`, target ≥ 0.7); and the time to re-protect;
//! - with pacing off (datanodes restarted with `--rebuild-rate 0`): the time to
//!   re-protect against its floor, the lost bytes written once at the device's
//!   bandwidth (`reprotect_unthrottled`, target ≥ 0.5).
//!
//! Env: STRATA_BENCH_SECS (per quiet case, default 5).

#[path = "support/baseline.rs"]
mod baseline;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baseline::{device_seq_write, emit};
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

/// Client load until `stop`: one writer with 4 appends of 1 MiB in flight, and 4
/// readers of random acknowledged slices at `READ_OFFERED_MBPS` in all. Returns
/// (append MB/s, read MB/s).
async fn load(sc: &StreamClient, slices: Arc<Vec<Slice>>, stop: Arc<AtomicBool>, max_append: u64) -> (f64, f64) {
    let t = Instant::now();
    let (wrote, read) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (sc, stop, wrote) = (sc.clone(), stop.clone(), wrote.clone());
        tokio::spawn(async move {
            let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
            let w = sc.open_writer(s.id, "bench-load").await.unwrap();
            let p = payload(7);
            let mut window = std::collections::VecDeque::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < max_append {
                while window.len() < 4 {
                    window.push_back(w.submit(p.clone()));
                    n += 1;
                }
                window.pop_front().unwrap().await.unwrap();
                wrote.fetch_add(1 << 20, Ordering::Relaxed);
            }
            for f in window {
                f.await.unwrap();
                wrote.fetch_add(1 << 20, Ordering::Relaxed);
            }
            w.close().await.unwrap();
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
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    let el = t.elapsed().as_secs_f64();
    (wrote.load(Ordering::Relaxed) as f64 / 1e6 / el, read.load(Ordering::Relaxed) as f64 / 1e6 / el)
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

/// Kills `victim` for good; returns the time from its loss being repairable (down past
/// the delay: the first repair) to every extent being whole again.
async fn lose(cl: &Cluster, dns: &mut [DataNode], meta: &MetaClient, victim: NodeId) -> f64 {
    dns[victim.0 as usize - 1].kill9();
    let _ = std::fs::remove_file(cl.dir.path().join(format!("d{victim}.img")));
    // Repair starts once the node is marked down (the loss shows as degraded extents)
    // and the delay has passed (the first repair is in flight).
    let start = loop {
        let r = meta.repairs().await.unwrap();
        let down = r.down_ms.iter().any(|(n, _)| *n == victim);
        if down && !r.degraded.is_empty() && !r.in_flight.is_empty() {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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

fn main() {
    let secs: f64 = std::env::var("STRATA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let cl = Cluster::start(1, &["--node-grace-ms", "1000", "--repair-delay-ms", "1000"]);
        let seq = device_seq_write(cl.dir.path(), secs);
        emit(json!({"suite": "repair", "case": "device_seq_write", "value": seq, "unit": "MB/s"}));
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

        // Quiet: the client load alone.
        let stop = Arc::new(AtomicBool::new(false));
        let timer = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                stop.store(true, Ordering::Relaxed);
            })
        };
        let (put_quiet, get_quiet) = load(&sc, slices.clone(), stop, 256).await;
        timer.await.unwrap();
        eprintln!("quiet: appends {put_quiet:.0} MB/s, reads {get_quiet:.0} MB/s");

        // Loss 1, default pacing, with the client load running until it is repaired.
        let (victim, bytes) = busiest(&meta).await;
        let stop = Arc::new(AtomicBool::new(false));
        let client_load = {
            let (sc, slices, stop) = (sc.clone(), slices.clone(), stop.clone());
            tokio::spawn(async move { load(&sc, slices, stop, 256).await })
        };
        let took = lose(&cl, &mut dns, &meta, victim).await;
        stop.store(true, Ordering::Relaxed);
        let (put_busy, get_busy) = client_load.await.unwrap();
        let floor = bytes as f64 / 1e6 / seq;
        emit(json!({"suite": "repair", "case": "reprotect_paced", "value": took, "unit": "s", "lower_is_better": true,
            "bytes": bytes, "baseline": "bytes / device_seq_write", "baseline_value": floor, "ratio": floor / took,
            "rebuild_rate_per_node": "32 MiB/s"}));
        emit(json!({"suite": "repair", "case": "append_1m_d4_during_repair", "value": put_busy, "unit": "MB/s",
            "baseline": "append_1m_d4_quiet", "baseline_value": put_quiet, "ratio": put_busy / put_quiet, "target": 0.7}));
        emit(json!({"suite": "repair", "case": "read_1m_c4_during_repair", "value": get_busy, "unit": "MB/s",
            "baseline": "read_1m_c4_quiet", "baseline_value": get_quiet, "ratio": get_busy / get_quiet, "target": 0.7}));

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
        let (victim, bytes) = busiest(&meta).await;
        let took = lose(&cl, &mut dns, &meta, victim).await;
        let floor = bytes as f64 / 1e6 / seq;
        emit(json!({"suite": "repair", "case": "reprotect_unthrottled", "value": took, "unit": "s",
            "lower_is_better": true, "bytes": bytes, "baseline": "bytes / device_seq_write", "baseline_value": floor,
            "ratio": floor / took, "target": 0.5}));
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
