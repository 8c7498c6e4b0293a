//! `scripts/bench.sh metanode`: a 3-member metanode group of real processes (the
//! release `metanode` binary next to this benchmark's own directory) on loopback, with
//! its stores on the same disk as the benchmark's own fsync baseline. It lives in the
//! `client` package, which does not link RocksDB: building it never rebuilds RocksDB
//! with another feature set.
//!
//! Cases (one JSON line each):
//! - device_fdatasync_4k: the disk's synchronous write rate, the limit of a Raft commit.
//! - alloc_seq / seal_seq: one writer, allocate then seal, back to back.
//! - alloc_c16 / seal_c16: 16 writers on 16 streams at once (Raft batches their entries).
//! - failover_gap_median / _max: kill -9 the leader of a caught-up group, time until an
//!   allocation succeeds, over repeated trials (target <= 2000 ms), against the floor
//!   Raft's timing sets (lease + minimum election timeout).
//! - state_bytes_per_extent: RocksDB state machine keys and values per extent.
//!
//! Env: STRATA_BENCH_SECS (per case, default 3), STRATA_BENCH_TRIALS (failovers, 5).

#[path = "support/baseline.rs"]
mod baseline;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baseline::{device_fdatasync_4k, emit};
use client::MetaClient;
use proto::meta::Policy;
use serde_json::json;
use testkit::{fake_datanode, Cluster};

/// The earliest a follower can run for leader after the leader dies, with the LAN
/// timing the tests use (heartbeat 50 ms, election 300-600 ms): openraft waits out the
/// leader's lease (the election maximum, 600 ms) plus a random election timeout
/// (at least 300 ms). The failover ratio is this floor over the measured gap.
const RAFT_FLOOR_MS: f64 = 900.0;

/// `writers` streams, each allocating and sealing back to back for `secs`.
async fn alloc_seal(c: &MetaClient, writers: usize, secs: f64) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (allocs, seals) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = c.create_stream(Policy::Replica { n: 3 }).await.unwrap();
        let v = c.open_stream(s.id, &format!("bench-{w}")).await.unwrap();
        let (c, stop, allocs, seals) = (c.clone(), stop.clone(), allocs.clone(), seals.clone());
        tasks.push(tokio::spawn(async move {
            let mut after = None;
            while !stop.load(Ordering::Relaxed) {
                let e = c.allocate_extent(s.id, v.stream.epoch, after).await.unwrap();
                allocs.fetch_add(1, Ordering::Relaxed);
                c.seal_extent(e.id, v.stream.epoch, 1 << 20).await.unwrap();
                seals.fetch_add(1, Ordering::Relaxed);
                after = Some(e.id);
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let el = start.elapsed().as_secs_f64();
    let (a, s) = (allocs.load(Ordering::Relaxed), seals.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (a as f64 / el, s as f64 / el)
}

fn main() {
    let secs: f64 = std::env::var("STRATA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let trials: usize = std::env::var("STRATA_BENCH_TRIALS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut cl = Cluster::start(3, &["--node-grace-ms", "600000"]);
        let sync = device_fdatasync_4k(cl.dir.path(), secs);
        emit(json!({"suite": "metanode", "case": "device_fdatasync_4k", "value": sync, "unit": "ops/s"}));
        let c = cl.client();
        for id in 1..=6 {
            c.register_node(&fake_datanode(proto::NodeId(id), &format!("z{}", id % 3))).await.unwrap();
        }
        for (writers, name) in [(1, "seq"), (16, "c16")] {
            let (a, s) = alloc_seal(&c, writers, secs).await;
            let base = |v: f64| v / sync;
            emit(json!({"suite": "metanode", "case": format!("alloc_{name}"), "value": a, "unit": "ops/s",
                "baseline": "device_fdatasync_4k", "baseline_value": sync, "ratio": base(a)}));
            emit(json!({"suite": "metanode", "case": format!("seal_{name}"), "value": s, "unit": "ops/s",
                "baseline": "device_fdatasync_4k", "baseline_value": sync, "ratio": base(s)}));
        }

        let st = c.status().await.unwrap();
        let usage = reqwest::get(format!("http://{}/v1/admin/usage", c.leader_addr()))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        let bytes = usage["state_bytes"].as_u64().unwrap() as f64;
        emit(json!({"suite": "metanode", "case": "state_bytes_per_extent", "value": bytes / st.extents as f64,
            "unit": "bytes", "extents": st.extents}));

        // Failover: a writer allocates continuously; kill -9 the leader; the gap is from
        // the kill to the first allocation that succeeds after it.
        let s = c.create_stream(Policy::Replica { n: 3 }).await.unwrap();
        let v = c.open_stream(s.id, "failover").await.unwrap();
        let mut after = None;
        let mut gaps = Vec::new();
        for _ in 0..trials {
            let leader = cl.leader().await;
            // Each trial starts from a healthy group: every member caught up with the leader.
            let target = c.status().await.unwrap().last_applied;
            for m in &cl.members {
                testkit::wait_for("member caught up", Duration::from_secs(30), || async {
                    (c.status_of(&m.addr).await.ok()?.last_applied >= target).then_some(())
                })
                .await;
            }
            for _ in 0..5 {
                let e = c.allocate_extent(s.id, v.stream.epoch, after).await.unwrap();
                c.seal_extent(e.id, v.stream.epoch, 4096).await.unwrap();
                after = Some(e.id);
            }
            let killed = Instant::now();
            cl.member_mut(leader).kill9();
            let watcher = {
                let c = c.clone();
                let addrs: Vec<String> = cl.members.iter().filter(|m| m.id != leader).map(|m| m.addr.clone()).collect();
                tokio::spawn(async move {
                    loop {
                        for a in &addrs {
                            if let Ok(s) = c.status_of(a).await {
                                if s.leader.as_ref().is_some_and(|l| l.id != leader) {
                                    return killed.elapsed().as_secs_f64() * 1000.0;
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            };
            let e = c.allocate_extent(s.id, v.stream.epoch, after).await.unwrap();
            gaps.push(killed.elapsed().as_secs_f64() * 1000.0);
            let elected = watcher.await.unwrap();
            eprintln!("trial: new leader seen after {elected:.0} ms, allocation after {:.0} ms", gaps.last().unwrap());
            c.seal_extent(e.id, v.stream.epoch, 4096).await.unwrap();
            after = Some(e.id);
            cl.member_mut(leader).start();
        }
        gaps.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = gaps[gaps.len() / 2];
        let max = *gaps.last().unwrap();
        for (case, v) in [("failover_gap_median", med), ("failover_gap_max", max)] {
            emit(json!({"suite": "metanode", "case": case, "value": v, "unit": "ms", "trials": trials,
                "baseline": "raft_timing_floor", "baseline_value": RAFT_FLOOR_MS, "ratio": RAFT_FLOOR_MS / v,
                "target": 2000.0}));
        }
        eprintln!("failover gaps (ms): {gaps:?}");
    });
}
