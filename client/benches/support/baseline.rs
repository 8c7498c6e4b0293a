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

/// A file opened (created, truncated) for O_DIRECT reads and writes.
fn direct(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

/// A zeroed 4 MiB buffer aligned for O_DIRECT.
struct Aligned(*mut u8, Layout);

impl Aligned {
    fn new() -> Aligned {
        let layout = Layout::from_size_align(4 << 20, 4096).unwrap();
        // SAFETY: a non-zero layout; freed in `drop` with the same layout.
        Aligned(unsafe { alloc_zeroed(layout) }, layout)
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: the pointer owns `size()` initialized (zeroed at first) bytes.
        unsafe { std::slice::from_raw_parts(self.0, self.1.size()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.0, self.1.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.0, self.1) }
    }
}

/// O_DIRECT 4 MiB writes for `secs` (at least 256 MiB), then fdatasync: MB/s.
pub fn device_seq_write(dir: &Path, secs: f64) -> f64 {
    let path = dir.join("baseline-seq.img");
    let f = direct(&path);
    let buf = Aligned::new();
    let t = Instant::now();
    let mut off = 0u64;
    while t.elapsed().as_secs_f64() < secs || off < 256 << 20 {
        f.write_all_at(buf.bytes(), off).unwrap();
        off += buf.bytes().len() as u64;
    }
    f.sync_data().unwrap();
    let mbps = off as f64 / 1e6 / t.elapsed().as_secs_f64();
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

/// Fills `f` (opened with `direct`) with 1 GiB, each 4 MiB block stamped with its
/// offset, durably; returns the length.
fn write_gib(f: &std::fs::File) -> u64 {
    let mut buf = Aligned::new();
    let len = 1u64 << 30;
    let mut off = 0;
    while off < len {
        buf.bytes_mut()[..8].copy_from_slice(&off.to_le_bytes());
        f.write_all_at(buf.bytes(), off).unwrap();
        off += buf.bytes().len() as u64;
    }
    f.sync_data().unwrap();
    len
}

/// O_DIRECT 4 MiB reads of a file of 1 GiB (written first, not timed) for `secs`, from
/// `READ_DEPTH` threads at once (the S3 GET cases keep 16 requests in flight): MB/s
/// from the device, past the page cache.
pub fn device_seq_read(dir: &Path, secs: f64) -> f64 {
    const READ_DEPTH: u64 = 16;
    let path = dir.join("baseline-read.img");
    let f = direct(&path);
    let len = write_gib(&f);
    let t = Instant::now();
    // Each thread reads its own quarter over and over, at least once.
    let read: u64 = std::thread::scope(|s| {
        let threads: Vec<_> = (0..READ_DEPTH)
            .map(|i| {
                let f = &f;
                s.spawn(move || {
                    let mut buf = Aligned::new();
                    let step = buf.bytes().len() as u64;
                    let (start, part) = (i * len / READ_DEPTH, len / READ_DEPTH);
                    let mut n = 0u64;
                    while t.elapsed().as_secs_f64() < secs || n < part {
                        f.read_exact_at(buf.bytes_mut(), start + n % part).unwrap();
                        n += step;
                    }
                    n
                })
            })
            .collect();
        threads.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let mbps = read as f64 / 1e6 / t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path).unwrap();
    mbps
}

/// A copy of 1 GiB (written first, not timed) into another file on the same device:
/// O_DIRECT 4 MiB reads, each written on, from `COPY_DEPTH` threads at once (each its
/// part), then fdatasync: MB/s of bytes copied. What a repair on one disk must at least
/// do: read each byte lost and write it again.
pub fn device_copy(dir: &Path) -> f64 {
    const COPY_DEPTH: u64 = 4;
    let (src, dst) = (dir.join("baseline-copy-src.img"), dir.join("baseline-copy-dst.img"));
    let from = direct(&src);
    let len = write_gib(&from);
    let to = direct(&dst);
    // Allocated first, as a datanode's device file is: writes past a file's end are
    // slower, and would lower the floor.
    // SAFETY: a valid descriptor owned by `to`; fallocate only reads its arguments.
    assert_eq!(unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&to), 0, 0, len as libc::off_t) }, 0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for i in 0..COPY_DEPTH {
            let (from, to) = (&from, &to);
            s.spawn(move || {
                let mut buf = Aligned::new();
                let step = buf.bytes().len() as u64;
                let part = len / COPY_DEPTH;
                let mut at = i * part;
                while at < (i + 1) * part {
                    from.read_exact_at(buf.bytes_mut(), at).unwrap();
                    to.write_all_at(buf.bytes(), at).unwrap();
                    at += step;
                }
            });
        }
    });
    to.sync_data().unwrap();
    let mbps = len as f64 / 1e6 / t.elapsed().as_secs_f64();
    drop((from, to));
    std::fs::remove_file(src).unwrap();
    std::fs::remove_file(dst).unwrap();
    mbps
}

/// One core copying 64 MiB buffers for `secs`: GB/s.
pub fn memcpy_gbps(secs: f64) -> f64 {
    let src = vec![7u8; 64 << 20];
    let mut dst = vec![0u8; 64 << 20];
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < secs {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        n += src.len() as u64;
    }
    n as f64 / 1e9 / t.elapsed().as_secs_f64()
}

/// One loopback TCP connection carrying 1 MiB writes for `secs`: MB/s.
pub fn loopback_tcp(secs: f64) -> f64 {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return n,
                k => n += k as u64,
            }
        }
    });
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let buf = vec![1u8; 1 << 20];
    let t = Instant::now();
    while t.elapsed().as_secs_f64() < secs {
        s.write_all(&buf).unwrap();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let n = sink.join().unwrap();
    n as f64 / 1e6 / t.elapsed().as_secs_f64()
}
