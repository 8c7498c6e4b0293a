//! `scripts/bench.sh logstream`: the client's replicated LogStream writer against a
//! local cluster of real processes (3 metanodes, 4 datanodes, one device file each,
//! all on this machine's one disk), with the disk's own sequential write bandwidth
//! measured in the same run. All three replicas share that disk, so the limit for
//! `replica:3` is a third of it (target: 0.9 of that).
//!
//! Cases: append_1m_d4 / append_1m_d16 (1 MiB appends, 4 or 16 in flight, MB/s of
//! client data), append_4k_p50 / _p99 (one 4 KiB append at a time, µs), against
//! device_seq_write and device_fdatasync_4k.
//!
//! The device files (6 GiB each) are prepared the way the datanode prepares a file it
//! creates, fallocated and zero-filled, so a flush does not also convert unwritten
//! extents in the filesystem's journal. The baseline writes a fresh file with one
//! flush at the end, which pays for block allocation but only one journal commit.
//!
//! Env: STRATA_BENCH_SECS (per case, default 5).
//!
//! `STRATA_BENCH_LOGSTREAM_MODE=ec` (part of `scripts/bench.sh ec`): 7 datanodes; 4
//! writers (streams) with 4 appends of 4 MiB in flight each (what the gateway does with
//! a body), as `replica:3` and as `ec:4+2` in alternating rounds; MB/s of client data.

#[path = "support/baseline.rs"]
mod baseline;

use std::collections::VecDeque;
use std::time::Instant;

use baseline::{device_fdatasync_4k, device_seq_write, emit};
use bytes::Bytes;
use client::{StreamClient, StreamConfig};
use proto::meta::Policy;
use serde_json::json;
use testkit::Cluster;

/// MB/s of `writers` streams of `policy`, each keeping `depth` appends of `payload` in
/// flight, for `secs`.
async fn pipelined(sc: &StreamClient, policy: Policy, writers: usize, depth: usize, payload: &Bytes, secs: f64) -> f64 {
    let t = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (sc, payload) = (sc.clone(), payload.clone());
            tokio::spawn(async move {
                let s = sc.create_stream(policy).await.unwrap();
                let w = sc.open_writer(s.id, "bench").await.unwrap();
                let mut window = VecDeque::new();
                let mut done = 0u64;
                while t.elapsed().as_secs_f64() < secs {
                    while window.len() < depth {
                        window.push_back(w.submit(payload.clone()));
                    }
                    window.pop_front().unwrap().await.unwrap();
                    done += 1;
                }
                for f in window {
                    f.await.unwrap();
                    done += 1;
                }
                w.close().await.unwrap();
                done
            })
        })
        .collect();
    let mut done = 0;
    for task in tasks {
        done += task.await.unwrap();
    }
    done as f64 * payload.len() as f64 / 1e6 / t.elapsed().as_secs_f64()
}

/// `replica:3` against `ec:4+2` on 7 datanodes, alternating rounds.
fn ec_compare(rt: &tokio::runtime::Runtime, secs: f64) {
    rt.block_on(async {
        let cl = Cluster::start(1, &["--node-grace-ms", "600000"]);
        let seq = device_seq_write(cl.dir.path(), secs);
        emit(json!({"suite": "ec", "case": "device_seq_write", "value": seq, "unit": "MB/s"}));
        let dns: Vec<testkit::DataNode> = (1..=7)
            .map(|i| testkit::DataNode::start_sized(cl.dir.path(), proto::NodeId(i), &cl.addrs(), "4G", true))
            .collect();
        let sc = StreamClient::new(cl.client(), StreamConfig::default());
        testkit::wait_datanodes_up(&sc.meta, 7).await;
        let payload =
            Bytes::from((0..4u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect::<Vec<u8>>());
        let mut sums = [0f64; 2];
        for round in 0..4 {
            let (which, policy) =
                if round % 2 == 0 { (0, Policy::Replica { n: 3 }) } else { (1, Policy::Ec { k: 4, m: 2 }) };
            // Rounds of at most 3 s: 4 GiB devices hold all four (there is no GC yet).
            let mbps = pipelined(&sc, policy, 4, 4, &payload, (secs / 2.0).min(3.0)).await;
            eprintln!("round {round}: {policy}: {mbps:.0} MB/s");
            sums[which] += mbps / 2.0;
        }
        let (replica, ec) = (sums[0], sums[1]);
        emit(json!({"suite": "ec", "case": "logstream_4m_w4_d4_replica3", "value": replica, "unit": "MB/s",
            "device_seq_write_over_3": seq / 3.0, "ratio_to_device_over_3": replica / (seq / 3.0)}));
        emit(json!({"suite": "ec", "case": "logstream_4m_w4_d4_ec4+2", "value": ec, "unit": "MB/s",
            "baseline": "replica:3", "baseline_value": replica, "ratio": ec / replica, "target": 1.8,
            "device_seq_write_over_1.5": seq / 1.5, "ratio_to_device_over_1.5": ec / (seq / 1.5)}));
        drop(dns);
    });
}

fn main() {
    let secs: f64 = std::env::var("STRATA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if std::env::var("STRATA_BENCH_LOGSTREAM_MODE").as_deref() == Ok("ec") {
        return ec_compare(&rt, secs);
    }
    rt.block_on(async {
        let cl = Cluster::start(3, &["--node-grace-ms", "600000"]);
        let seq = device_seq_write(cl.dir.path(), secs);
        emit(json!({"suite": "logstream", "case": "device_seq_write", "value": seq, "unit": "MB/s"}));
        let sync = device_fdatasync_4k(cl.dir.path(), secs);
        emit(json!({"suite": "logstream", "case": "device_fdatasync_4k", "value": sync, "unit": "ops/s"}));
        let dns: Vec<testkit::DataNode> = (1..=4)
            .map(|i| testkit::DataNode::start_sized(cl.dir.path(), proto::NodeId(i), &cl.addrs(), "6G", true))
            .collect();
        let sc = StreamClient::new(cl.client(), StreamConfig::default());
        testkit::wait_datanodes_up(&sc.meta, 4).await;
        let limit = seq / 3.0;
        let payload = Bytes::from((0..1 << 20).map(|i: u32| (i * 7) as u8).collect::<Vec<u8>>());
        for depth in [4usize, 16] {
            let mbps = pipelined(&sc, Policy::Replica { n: 3 }, 1, depth, &payload, secs).await;
            emit(json!({"suite": "logstream", "case": format!("append_1m_d{depth}"), "value": mbps, "unit": "MB/s",
                "baseline": "device_seq_write/3", "baseline_value": limit, "ratio": mbps / limit, "target": 0.9}));
        }
        let s = sc.create_stream(Policy::Replica { n: 3 }).await.unwrap();
        let w = sc.open_writer(s.id, "bench-4k").await.unwrap();
        let small = Bytes::from(vec![5u8; 4096]);
        let mut lat = Vec::new();
        let t = Instant::now();
        while t.elapsed().as_secs_f64() < secs {
            let a = Instant::now();
            w.append(small.clone()).await.unwrap();
            lat.push(a.elapsed().as_secs_f64() * 1e6);
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let sync_us = 1e6 / sync;
        for (case, q) in [("append_4k_p50", 0.5), ("append_4k_p99", 0.99)] {
            let v = lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
            emit(json!({"suite": "logstream", "case": case, "value": v, "unit": "us", "samples": lat.len(),
                "baseline": "device_fdatasync_4k latency", "baseline_value": sync_us, "ratio": sync_us / v}));
        }
        drop(dns);
    });
}
