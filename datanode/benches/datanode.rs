//! `scripts/bench.sh datanode`: append throughput over the RPC against a real datanode
//! process, as ratios to the device's own limits measured here in the same run.
//!
//! Baselines (same filesystem as the datanode's device file, both O_DIRECT into a file
//! prepared like the device file: fallocated and zero-filled):
//! - `device_seq_write`: sequential 4 MiB pwrite, one fdatasync at the end.
//! - `device_fdatasync_4k`: 4 KiB pwrite + fdatasync, one after the other.
//! - `loopback_tcp`: bytes through one loopback TCP connection (context only).
//! - `rpc_ceiling_*`: the same cases against a datanode whose device file is on tmpfs:
//!   what the RPC path and CPU allow on this machine with no device in the way.
//!
//! Cases: append sizes 4K, 64K, 1M, 4M with 1, 4 and 16 writers. Each writer has its own
//! connection and extent and waits for each acknowledgement before the next append.
//! Cases ending `_d4` repeat the large sizes with writers that keep 4 appends in flight.
//! Environment: STRATA_BENCH_DIR (default: a temp dir under target/), STRATA_BENCH_SECS,
//! STRATA_BENCH_CASES (comma-separated case names to run, e.g. append_1m_w4),
//! STRATA_BENCH_DATANODE_ARGS (extra datanode flags, e.g. `--io-engine sync`),
//! STRATA_BENCH_DATANODE_BIN (another datanode build, for A/B comparisons),
//! STRATA_BENCH_DEVICE_DIR (where the datanode's device file goes; e.g. tmpfs to take the
//! device out of the picture and see the RPC path's own ceiling),
//! STRATA_BENCH_LOG (the datanode's RUST_LOG; `datanode=debug` shows group-commit figures).
//!
//! `STRATA_BENCH_BACKEND=spdk` (`scripts/bench.sh datanode --backend spdk`, a datanode
//! built with `--features spdk`): a few cases run on the portable backend and then on
//! the SPDK backend, first over an AIO bdev (`spdk_*`) and then over an io_uring bdev
//! (`spdk_uring_*`), no hugepages, each time over the same freshly prepared file, side
//! by side; each SPDK line carries the portable figure as its baseline.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{ClientError, DataNodeClient};
use datanode::align::AlignedBuf;
use datanode::blobstore::io::{fdatasync, pwrite_all};
use proto::{Epoch, ExtentError, ExtentId};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A file prepared like the datanode prepares a device file it creates: fallocated,
/// then zero-filled, so neither side pays for unwritten-extent conversion.
fn prepared(path: &Path, bytes: u64) -> std::fs::File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    // SAFETY: fallocate on an owned descriptor.
    assert_eq!(unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, bytes as libc::off_t) }, 0, "fallocate");
    let zero = AlignedBuf::zeroed(4 << 20);
    let mut off = 0;
    while off < bytes {
        // SAFETY: zero outlives the call.
        unsafe { pwrite_all(f.as_raw_fd(), zero.as_ptr(), zero.len(), off).unwrap() };
        off += zero.len() as u64;
    }
    fdatasync(f.as_raw_fd()).unwrap();
    f
}

/// Sequential O_DIRECT write bandwidth in MB/s.
fn device_seq_write(dir: &Path, secs: f64) -> f64 {
    let total: u64 = 4 << 30;
    let path = dir.join("baseline-seq.img");
    let f = prepared(&path, total);
    let buf = AlignedBuf::zeroed(4 << 20);
    let t = Instant::now();
    let mut off = 0;
    while off < total && (t.elapsed().as_secs_f64() < secs || off < 256 << 20) {
        // SAFETY: buf outlives the call.
        unsafe { pwrite_all(f.as_raw_fd(), buf.as_ptr(), buf.len(), off).unwrap() };
        off += buf.len() as u64;
    }
    fdatasync(f.as_raw_fd()).unwrap();
    let mbps = off as f64 / 1e6 / t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path).unwrap();
    mbps
}

/// 4 KiB write + fdatasync per operation, in ops/s.
fn device_fdatasync_4k(dir: &Path, secs: f64) -> f64 {
    let path = dir.join("baseline-sync.img");
    let f = prepared(&path, 256 << 20);
    let buf = AlignedBuf::zeroed(4096);
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs || n < 100 {
        // SAFETY: buf outlives the call.
        unsafe { pwrite_all(f.as_raw_fd(), buf.as_ptr(), 4096, n * 4096).unwrap() };
        fdatasync(f.as_raw_fd()).unwrap();
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path).unwrap();
    rate
}

/// One loopback TCP connection, 1 MiB writes, in MB/s.
async fn loopback_tcp(secs: f64) -> f64 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let sink = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf).await.unwrap() {
                0 => return n,
                k => n += k as u64,
            }
        }
    });
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let buf = vec![1u8; 1 << 20];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        s.write_all(&buf).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let n = sink.await.unwrap();
    n as f64 / 1e6 / t.elapsed().as_secs_f64()
}

struct CaseResult {
    appends: u64,
    bytes: u64,
    secs: f64,
}

async fn run_case(
    addr: &str,
    size: usize,
    writers: usize,
    depth: usize,
    secs: f64,
    next_extent: Arc<AtomicU64>,
) -> CaseResult {
    let stop = Arc::new(AtomicBool::new(false));
    let appends = Arc::new(AtomicU64::new(0));
    let payload = Bytes::from((0..size).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    let mut tasks = Vec::new();
    // Warm up connections and extents before the clock starts.
    let mut clients = Vec::new();
    for _ in 0..writers {
        let c = DataNodeClient::connect(addr).await.unwrap();
        let e = ExtentId(next_extent.fetch_add(1, Ordering::Relaxed));
        c.create(e, Epoch(1), 0).await.unwrap();
        clients.push((c, e));
    }
    let t = Instant::now();
    for (c, first) in clients {
        let (stop, appends, payload, next) = (stop.clone(), appends.clone(), payload.clone(), next_extent.clone());
        tasks.push(tokio::spawn(async move {
            let (mut extent, mut off) = (first, 0u64);
            let mut mine = vec![first];
            let mut inflight = std::collections::VecDeque::new();
            loop {
                while inflight.len() < depth && !stop.load(Ordering::Relaxed) {
                    let req = DataNodeClient::append_request(extent, off, Epoch(1), payload.clone());
                    inflight.push_back(c.submit(req));
                    off += payload.len() as u64;
                }
                let Some(f) = inflight.pop_front() else { break };
                match f.await.map(client::conn::appended) {
                    Ok(Ok(_)) => {
                        appends.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(ClientError::Extent(ExtentError::ExtentFull { length, .. })) => {
                        // Roll to a fresh extent, as a LogStream does: drain, seal, create.
                        while let Some(f) = inflight.pop_front() {
                            let _ = f.await;
                        }
                        c.seal(extent, length).await.unwrap();
                        // Free the space at once, as GC would, so long runs fit the device.
                        c.delete(extent).await.unwrap();
                        mine.retain(|&e| e != extent);
                        extent = ExtentId(next.fetch_add(1, Ordering::Relaxed));
                        c.create(extent, Epoch(1), 0).await.unwrap();
                        mine.push(extent);
                        off = 0;
                    }
                    Err(e) => panic!("append: {e}"),
                    Ok(Err(e)) => panic!("append: {e}"),
                }
            }
            (c, mine)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut cleanup = Vec::new();
    for t in tasks {
        cleanup.push(t.await.unwrap());
    }
    let secs = t.elapsed().as_secs_f64();
    let n = appends.load(Ordering::Relaxed);
    for (c, extents) in cleanup {
        for e in extents {
            c.delete(e).await.unwrap();
        }
    }
    CaseResult { appends: n, bytes: n * size as u64, secs }
}

/// Starts the datanode under test with one device file in `device_dir`.
fn start_datanode(device_dir: &Path, size: &str) -> (std::process::Child, String) {
    start_datanode_with(&["--device".into(), format!("{}:{size}", device_dir.join("dev0.img").display())])
}

fn start_datanode_with(device: &[String]) -> (std::process::Child, String) {
    let bin = std::env::var("STRATA_BENCH_DATANODE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_datanode").into());
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(device)
        .args(std::env::var("STRATA_BENCH_DATANODE_ARGS").unwrap_or_default().split_whitespace())
        .env("RUST_LOG", std::env::var("STRATA_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start datanode");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split("listening on ").nth(1).expect("datanode address").trim().to_owned();
    (child, addr)
}

fn emit(v: serde_json::Value) {
    println!("{v}");
}

fn main() {
    let secs: f64 = std::env::var("STRATA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let base = std::env::var("STRATA_BENCH_DIR").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        let t = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target").into());
        Path::new(&t).join("bench-data")
    });
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let seq = device_seq_write(dir.path(), secs);
    emit(json!({"suite": "datanode", "case": "device_seq_write", "value": seq, "unit": "MB/s"}));
    let sync = device_fdatasync_4k(dir.path(), secs);
    emit(json!({"suite": "datanode", "case": "device_fdatasync_4k", "value": sync, "unit": "ops/s"}));
    let lo = rt.block_on(loopback_tcp(secs.min(2.0)));
    emit(json!({"suite": "datanode", "case": "loopback_tcp", "value": lo, "unit": "MB/s"}));

    if std::env::var("STRATA_BENCH_BACKEND").as_deref() == Ok("spdk") {
        return backends_side_by_side(&rt, dir.path(), secs, seq, sync);
    }
    let (mut child, addr) = start_datanode(dir.path(), "6G");
    let only = std::env::var("STRATA_BENCH_CASES").ok();
    let next_extent = Arc::new(AtomicU64::new(1));
    let mut cases = Vec::new();
    for (size, label) in [(4usize << 10, "4k"), (64 << 10, "64k"), (1 << 20, "1m"), (4 << 20, "4m")] {
        for writers in [1usize, 4, 16] {
            cases.push((size, label, writers, 1usize));
        }
    }
    // Again with writers that pipeline, as a LogStream does.
    cases.push((4 << 10, "4k", 16, 4));
    for (size, label) in [(1usize << 20, "1m"), (4 << 20, "4m")] {
        for writers in [1usize, 4] {
            cases.push((size, label, writers, 4usize));
        }
    }
    for (size, label, writers, depth) in cases {
        {
            let case = if depth == 1 {
                format!("append_{label}_w{writers}")
            } else {
                format!("append_{label}_w{writers}_d{depth}")
            };
            if only.as_ref().is_some_and(|o| !o.split(',').any(|c| c == case)) {
                continue;
            }
            let r = rt.block_on(run_case(&addr, size, writers, depth, secs, next_extent.clone()));
            if size >= 1 << 20 {
                let mbps = r.bytes as f64 / 1e6 / r.secs;
                emit(json!({"suite": "datanode", "case": case, "value": mbps, "unit": "MB/s",
                    "baseline": "device_seq_write", "baseline_value": seq, "ratio": mbps / seq, "target": 0.9}));
            } else {
                let rate = r.appends as f64 / r.secs;
                let mut v = json!({"suite": "datanode", "case": case, "value": rate, "unit": "appends/s",
                    "baseline": "device_fdatasync_4k", "baseline_value": sync, "ratio": rate / sync});
                if size == 4 << 10 && writers == 16 && depth == 1 {
                    v["target"] = json!(5.0);
                }
                emit(v);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();

    // The RPC path's own ceiling on this machine: the same datanode and clients with the
    // device file on tmpfs (writes are memory copies, flushes free). No device ratio can
    // exceed ceiling / device_seq_write here, since clients and server share the cores.
    let shm = Path::new("/dev/shm");
    if only.is_none() && shm.is_dir() {
        let mem = tempfile::tempdir_in(shm).unwrap();
        let (mut child, addr) = start_datanode(mem.path(), "3G");
        for (size, label, writers) in [(4usize << 10, "4k", 16usize), (1 << 20, "1m", 4), (4 << 20, "4m", 4)] {
            let r = rt.block_on(run_case(&addr, size, writers, 1, secs, next_extent.clone()));
            let (value, unit) = if size >= 1 << 20 {
                (r.bytes as f64 / 1e6 / r.secs, "MB/s")
            } else {
                (r.appends as f64 / r.secs, "appends/s")
            };
            emit(
                json!({"suite": "datanode", "case": format!("rpc_ceiling_{label}_w{writers}"), "value": value, "unit": unit}),
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The portable and the SPDK backend (AIO, then io_uring bdev) over the same prepared
/// 2 GiB file, case by case.
fn backends_side_by_side(rt: &tokio::runtime::Runtime, dir: &Path, secs: f64, seq: f64, sync: f64) {
    let file = dir.join("dev0.img");
    let cases = [
        (4usize << 10, "4k", 16usize, 1usize),
        (64 << 10, "64k", 4, 1),
        (1 << 20, "1m", 4, 1),
        (4 << 20, "4m", 4, 1),
        (1 << 20, "1m", 4, 4),
    ];
    let mut portable = Vec::new();
    for backend in ["portable", "spdk", "spdk_uring"] {
        let _ = std::fs::remove_file(&file);
        drop(prepared(&file, 2 << 30));
        let f = file.display().to_string();
        let args: Vec<String> = match backend {
            "portable" => vec!["--device".into(), f, "--format".into()],
            "spdk" => vec!["--backend".into(), "spdk".into(), "--spdk-aio".into(), f, "--format".into()],
            _ => vec!["--backend".into(), "spdk".into(), "--spdk-uring".into(), f, "--format".into()],
        };
        let (mut child, addr) = start_datanode_with(&args);
        let next_extent = Arc::new(AtomicU64::new(1));
        for (i, &(size, label, writers, depth)) in cases.iter().enumerate() {
            let case = match depth {
                1 => format!("{backend}_append_{label}_w{writers}"),
                d => format!("{backend}_append_{label}_w{writers}_d{d}"),
            };
            let r = rt.block_on(run_case(&addr, size, writers, depth, secs, next_extent.clone()));
            let (value, unit, limit, limit_name) = if size >= 1 << 20 {
                (r.bytes as f64 / 1e6 / r.secs, "MB/s", seq, "device_seq_write")
            } else {
                (r.appends as f64 / r.secs, "appends/s", sync, "device_fdatasync_4k")
            };
            let mut v = json!({"suite": "datanode", "case": case, "value": value, "unit": unit,
                "device_limit": limit_name, "device_limit_value": limit, "ratio_to_device": value / limit});
            if backend == "portable" {
                portable.push(value);
            } else {
                v["baseline"] = json!("portable");
                v["baseline_value"] = json!(portable[i]);
                v["ratio"] = json!(value / portable[i]);
                // Issue 21's targets on this machine: 0.8 of the portable backend for 4 KiB
                // appends with 16 writers, 0.9 for 1 MiB and more.
                match size {
                    s if s >= 1 << 20 => v["target"] = json!(0.9),
                    s if s == 4 << 10 => v["target"] = json!(0.8),
                    _ => {}
                }
            }
            emit(v);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
