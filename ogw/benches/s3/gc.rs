//! `STRATA_BENCH_S3_MODE=gc` (`scripts/bench.sh gc`): GC on one standalone (3
//! datanodes, replica:3, 64 MiB extents, grace 5 s, a pass every 2 s, compaction below
//! the default 50 %), with the device's sequential write bandwidth measured in the same
//! run:
//! - space amplification after an overwrite-heavy workload (96 keys of 4 MiB, then
//!   3 rounds overwriting two keys of every three): bytes on the devices once GC is
//!   quiet / (live bytes × 3); target ≤ 1.5;
//! - compaction rate (bytes GC copied / the time its passes spent compacting) against
//!   the device's bandwidth / 3 (each copied byte is written three times);
//! - reclaim rate after deleting everything (device bytes freed / the time after the
//!   grace) against the device's bandwidth;
//! - foreground PUTs during compaction and during lazy erasure coding (`foreground`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::{json, Value};

use super::{drive, emit, setup, start_strata, unique, Gen};

const KEYS: u64 = 96;
const SIZE: usize = 4 << 20;
const ROUNDS: u64 = 4;
const GRACE_S: f64 = 5.0;

/// What `gc status` says now.
fn status(data: &Path) -> Value {
    let bin = super::target_dir().join("gc");
    let db = format!("sqlite://{}", data.join("ogw.db").display());
    let out = Command::new(&bin).args(["status", "--db", &db]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or(0)
}

/// Bytes on the devices: every extent's sealed length times its copies (the open ones
/// count nothing; idle sealing closes them within seconds).
async fn device_bytes(http: &reqwest::Client, meta: &str, data: &Path) -> u64 {
    // Standalone's own secrets sign the requests.
    let keys = proto::auth::Keyring::load(&data.join("cluster.secrets")).unwrap();
    let cred = keys.credential(proto::auth::Role::Client).unwrap();
    let get = |path: String| {
        let auth = proto::auth::sign_http(&cred, "GET", &path, b"");
        let req = http.get(format!("http://{meta}{path}")).header("authorization", auth);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let streams = get("/v1/streams".into()).await;
    let mut total = 0;
    for s in streams.as_array().unwrap() {
        let v = get(format!("/v1/streams/{}", s["id"])).await;
        for e in v["extents"].as_array().unwrap() {
            total += e["sealed_len"].as_u64().unwrap_or(0) * e["replicas"].as_array().unwrap().len() as u64;
        }
    }
    total
}

/// Waits until GC is quiet: nothing pending, and no counter moved over three passes.
/// Returns the status and when the last counter moved.
fn quiet(data: &Path, since: Instant) -> (Value, Instant) {
    let moving = |v: &Value| {
        let n = |k| num(v, k);
        (
            n("bytes_compacted_total"),
            n("bytes_reclaimed_total"),
            n("extents_doomed_total"),
            n("bytes_transitioned_total"),
        )
    };
    let (mut last, mut moved, mut still) = (status(data), since, 0);
    while still < 7 && since.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(500));
        let now = status(data);
        let pending = num(&now, "extents_pending") + num(&now, "copies_pending");
        if moving(&now) != moving(&last) || pending > 0 {
            moved = Instant::now();
            still = 0;
        } else {
            still += 1;
        }
        last = now;
    }
    (last, moved)
}

pub fn bench(secs: f64) {
    let (root, rt, seq) = setup("gc", "s3-gc", secs);
    let data = root.join("strata");
    let args =
        ["--device-size", "6G", "--extent-size", "64M", "--idle-seal", "2s", "--gc-grace", "5s", "--gc-interval", "2s"];
    let (child, t) = start_strata(&data, &args);
    let meta = t.meta.clone().expect("standalone prints its metanode");
    let g = Arc::new(Gen::new(Arc::new(t)));
    proto::tls::install_provider();
    let http = reqwest::Client::new();
    let base = Bytes::from((0..SIZE as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect::<Vec<u8>>());
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    rt.block_on(g.send("PUT", "/gcbench", Bytes::new()));
    // The first round writes every key; later ones two keys of every three, so that
    // extents keep a third of their bytes named and compaction, not deletion alone,
    // has to give the rest back.
    let put_all = |round: u64| {
        let (g, base) = (g.clone(), base.clone());
        let n = if round == 0 { KEYS } else { KEYS / 3 * 2 };
        rt.block_on(drive(16, 600.0, n, move |i| {
            let k = if round == 0 { i } else { i / 2 * 3 + 1 + i % 2 };
            let (g, body) = (g.clone(), unique(&base, SIZE, seed + round, k));
            async move {
                g.send("PUT", &format!("/gcbench/k{k}"), body).await;
            }
        }));
    };

    // Overwrites, then GC on its own until quiet.
    for round in 0..ROUNDS {
        put_all(round);
    }
    let before = status(&data);
    let written = Instant::now();
    let (after, moved) = quiet(&data, written);
    let on_devices = rt.block_on(device_bytes(&http, &meta, &data));
    let live = KEYS * SIZE as u64;
    emit(
        json!({"suite": "gc", "case": "space_amplification_after_overwrites", "value": on_devices as f64 / (live * 3) as f64,
        "unit": "x", "target": 1.5, "lower_is_better": true, "live_bytes": live, "device_bytes": on_devices,
        "written_bytes": live + live / 3 * 2 * (ROUNDS - 1)}),
    );
    let copied = num(&after, "bytes_compacted_total") - num(&before, "bytes_compacted_total");
    let took = (num(&after, "compaction_ms_total") - num(&before, "compaction_ms_total")) as f64 / 1e3;
    let rate = copied as f64 / 1e6 / took.max(0.001);
    emit(json!({"suite": "gc", "case": "compaction", "value": rate, "unit": "MB/s",
        "baseline": "device_seq_write/3", "baseline_value": seq / 3.0, "ratio": rate / (seq / 3.0),
        "bytes_copied": copied, "seconds_compacting": took, "seconds_until_quiet": moved.duration_since(written).as_secs_f64()}));
    // Delete everything; time until the devices are free again.
    let (_, _) = quiet(&data, Instant::now());
    let held = rt.block_on(device_bytes(&http, &meta, &data));
    let r0 = num(&status(&data), "bytes_reclaimed_total");
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(|i| format!("k{i}")).collect());
    let t0 = Instant::now();
    let (g2, k2) = (g.clone(), keys.clone());
    rt.block_on(drive(16, 600.0, keys.len() as u64, move |i| {
        let (g, path) = (g2.clone(), format!("/gcbench/{}", k2[i as usize]));
        async move {
            g.send("DELETE", &path, Bytes::new()).await;
        }
    }));
    let mut freed = 0;
    while t0.elapsed() < Duration::from_secs(300) {
        freed = num(&status(&data), "bytes_reclaimed_total") - r0;
        if freed as f64 >= held as f64 * 0.9 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let after_grace = (t0.elapsed().as_secs_f64() - GRACE_S).max(0.001);
    emit(json!({"suite": "gc", "case": "reclaim", "value": freed as f64 / 1e6 / after_grace, "unit": "MB/s",
        "baseline": "device_seq_write", "baseline_value": seq, "ratio": freed as f64 / 1e6 / after_grace / seq,
        "bytes_freed": freed, "seconds_after_delete": t0.elapsed().as_secs_f64(), "grace_s": GRACE_S,
        "objects_deleted": keys.len()}));
    drop(child);
    let _ = std::fs::remove_dir_all(&data);
    foreground(&root, &rt, secs, seq);
    let _ = std::fs::remove_dir_all(&root);
}

/// Victims for the foreground cases: 1 GiB in 4 MiB objects.
const VICTIMS: u64 = 256;
/// 1 MiB PUTs of one foreground phase at most: the devices hold every phase beside the
/// victims and GC's copies.
const FG_OPS: u64 = 768;
/// A GET phase's length at most: GETs and then PUTs must fit in the time GC compacts.
const GET_SECS: f64 = 3.0;

/// Foreground GETs and PUTs (1 MiB, 16 in flight) while GC copies, against the same on the quiet
/// cluster, on a second standalone whose GC compacts any extent with a dead byte and
/// runs a pass every 500 ms, so that it copies through the whole window (each case
/// reports the share of the window GC spent copying, from the progress `gc status`
/// shows during a pass):
/// - during compaction (GETs, then PUTs): a quarter of 1 GiB of objects deleted right
///   before, every extent they were in is rewritten;
/// - during lazy erasure coding: a transition rule (after 1 s, to ec:2+1) set right
///   before moves everything written so far; its copying rate is also reported, against
///   the device's bandwidth / 1.5 (each moved byte is written 1.5 times).
fn foreground(root: &Path, rt: &tokio::runtime::Runtime, secs: f64, seq: f64) {
    let data = root.join("strata-fg");
    let args = [
        "--device-size",
        "6G",
        "--extent-size",
        "64M",
        "--idle-seal",
        "2s",
        "--gc-grace",
        "5s",
        "--gc-interval",
        "500ms",
        "--gc-compact-below",
        "100%",
    ];
    let (child, t) = start_strata(&data, &args);
    let g = Arc::new(Gen::new(Arc::new(t)));
    let base = Bytes::from((0..SIZE as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect::<Vec<u8>>());
    let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64;
    rt.block_on(g.send("PUT", "/fgbench", Bytes::new()));
    let (g1, b1) = (g.clone(), base.clone());
    rt.block_on(drive(16, 600.0, VICTIMS, move |i| {
        let (g, body) = (g1.clone(), unique(&b1, SIZE, seed, i));
        async move {
            g.send("PUT", &format!("/fgbench/v{i}"), body).await;
        }
    }));
    quiet(&data, Instant::now());
    let fg = |tag: &'static str| {
        let (g, base) = (g.clone(), base.clone());
        let (n, el, _) = rt.block_on(drive(16, secs, FG_OPS, move |i| {
            let (g, body) = (g.clone(), unique(&base, 1 << 20, seed ^ 0xf00d, i));
            async move {
                g.send("PUT", &format!("/fgbench/{tag}/{i}"), body).await;
            }
        }));
        (n as f64 * (1 << 20) as f64 / 1e6 / el, el, n)
    };
    let (quiet_mbps, _, nq) = fg("quiet");
    // GETs of the objects just written (every body read whole and its length checked).
    let get = || {
        let g = g.clone();
        let (n, el, _) = rt.block_on(drive(16, secs.min(GET_SECS), u64::MAX, move |i| {
            let g = g.clone();
            async move {
                let r = g.send("GET", &format!("/fgbench/quiet/{}", i % nq), Bytes::new()).await;
                assert!(r.status().is_success(), "GET: {}", r.status());
                assert_eq!(r.bytes().await.unwrap().len(), 1 << 20);
            }
        }));
        n as f64 * (1 << 20) as f64 / 1e6 / el
    };
    let quiet_get = get();

    let s0 = status(&data);
    let g2 = g.clone();
    rt.block_on(drive(16, 600.0, VICTIMS / 4, move |i| {
        let g = g2.clone();
        async move {
            g.send("DELETE", &format!("/fgbench/v{}", i * 4), Bytes::new()).await;
        }
    }));
    let t0 = Instant::now();
    let busy_get = get();
    let s_get = status(&data);
    let get_window = t0.elapsed().as_secs_f64();
    let (busy_mbps, window, _) = fg("compaction");
    let s1 = status(&data);
    let busy = (num(&s_get, "compaction_ms_total") - num(&s0, "compaction_ms_total")) as f64 / 1e3 / get_window;
    emit(json!({"suite": "gc", "case": "get_1m_c16_during_compaction", "value": busy_get, "unit": "MB/s",
        "baseline": "get_1m_c16_quiet", "baseline_value": quiet_get, "ratio": busy_get / quiet_get, "target": 0.7,
        "bytes_compacted_meanwhile": num(&s_get, "bytes_compacted_total") - num(&s0, "bytes_compacted_total"),
        "gc_compacting_fraction_of_window": busy}));
    let busy = (num(&s1, "compaction_ms_total") - num(&s_get, "compaction_ms_total")) as f64 / 1e3 / window;
    emit(json!({"suite": "gc", "case": "put_1m_c16_during_compaction", "value": busy_mbps, "unit": "MB/s",
        "baseline": "put_1m_c16_quiet", "baseline_value": quiet_mbps, "ratio": busy_mbps / quiet_mbps, "target": 0.7,
        "bytes_compacted_meanwhile": num(&s1, "bytes_compacted_total") - num(&s_get, "bytes_compacted_total"),
        "gc_compacting_fraction_of_window": busy}));

    quiet(&data, Instant::now());
    let s2 = status(&data);
    let key = data.join("master.key");
    let out = Command::new(super::target_dir().join("ogw"))
        .args(["bucket-transition", "--db", &format!("sqlite://{}", data.join("ogw.db").display()), "--master-key"])
        .arg(&key)
        .args(["fgbench", "--after", "1s", "--policy", "ec:2+1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "bucket-transition: {}", String::from_utf8_lossy(&out.stderr));
    let (lazy_mbps, window, _) = fg("lazy-ec");
    let s3 = status(&data);
    let busy = (num(&s3, "transition_ms_total") - num(&s2, "transition_ms_total")) as f64 / 1e3 / window;
    emit(json!({"suite": "gc", "case": "put_1m_c16_during_lazy_ec", "value": lazy_mbps, "unit": "MB/s",
        "baseline": "put_1m_c16_quiet", "baseline_value": quiet_mbps, "ratio": lazy_mbps / quiet_mbps, "target": 0.7,
        "bytes_moved_meanwhile": num(&s3, "bytes_transitioned_total") - num(&s2, "bytes_transitioned_total"),
        "gc_moving_fraction_of_window": busy}));
    let (s4, _) = quiet(&data, Instant::now());
    let moved = num(&s4, "bytes_transitioned_total") - num(&s2, "bytes_transitioned_total");
    let took = (num(&s4, "transition_ms_total") - num(&s2, "transition_ms_total")) as f64 / 1e3;
    let rate = moved as f64 / 1e6 / took.max(0.001);
    emit(json!({"suite": "gc", "case": "lazy_ec", "value": rate, "unit": "MB/s",
        "baseline": "device_seq_write/1.5", "baseline_value": seq / 1.5, "ratio": rate / (seq / 1.5),
        "bytes_moved": moved, "objects_moved": num(&s4, "objects_transitioned_total"), "seconds_moving": took}));
    eprintln!("gc status at the end: {s4}");
    drop(child);
}
