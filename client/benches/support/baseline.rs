//! Limits of this machine measured by the benchmarks in the same run as their cases,
//! and the JSON line they print. Shared by `benches/metanode.rs` and
//! `benches/logstream.rs`.
#![allow(dead_code)]

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Instant;

pub fn emit(v: serde_json::Value) {
    println!("{v}");
}

/// O_DIRECT 4 MiB writes for `secs` (at least 256 MiB), then fdatasync: MB/s.
pub fn device_seq_write(dir: &Path, secs: f64) -> f64 {
    let path = dir.join("baseline-seq.img");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let layout = Layout::from_size_align(4 << 20, 4096).unwrap();
    // SAFETY: a non-zero layout; freed below with the same layout.
    let ptr = unsafe { alloc_zeroed(layout) };
    // SAFETY: `ptr` points to `layout.size()` initialized (zeroed) bytes.
    let buf = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
    let t = Instant::now();
    let mut off = 0u64;
    while t.elapsed().as_secs_f64() < secs || off < 256 << 20 {
        f.write_all_at(buf, off).unwrap();
        off += buf.len() as u64;
    }
    f.sync_data().unwrap();
    let mbps = off as f64 / 1e6 / t.elapsed().as_secs_f64();
    // SAFETY: allocated above with this layout.
    unsafe { dealloc(ptr, layout) };
    drop(f);
    std::fs::remove_file(path).unwrap();
    mbps
}

/// 4 KiB write + fdatasync, back to back, for `secs`: operations per second.
pub fn device_fdatasync_4k(dir: &Path, secs: f64) -> f64 {
    let mut f = std::fs::File::create(dir.join("baseline-sync.img")).unwrap();
    let buf = [7u8; 4096];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}
